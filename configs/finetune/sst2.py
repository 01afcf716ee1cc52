"""GLUE SST-2: single-sentence binary sentiment classification."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="classification",
        train_file="$BERTJAX_DATA/sst2/train.tsv",
        eval_file="$BERTJAX_DATA/sst2/dev.tsv",
        text_a="sentence",
        label="label",
        labels=["0", "1"],
        max_len=66,
    )
    config.train.num_epochs = 3.0
    return config
