"""Any sentence (pair) classification file: set task.train_file/eval_file and the columns.

E.g. --config.task.train_file=train.csv --config.task.eval_file=dev.csv
--config.task.text_a=review --config.task.label=stars; for a regression target add
--config.task.kind=regression.
"""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.kind = "classification"
    return config
