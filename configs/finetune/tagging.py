"""Any CoNLL-format token classification files: set task.train_file/eval_file (and scheme)."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.kind = "tagging"
    return config
