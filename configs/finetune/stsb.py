"""GLUE STS-B: sentence-pair similarity regression (scores 0-5)."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="regression",
        train_file="$BERTJAX_DATA/glue-stsb/train.tsv",
        eval_file="$BERTJAX_DATA/glue-stsb/dev.tsv",
        text_a="sentence1",
        text_b="sentence2",
        label="score",
        max_len=128,
    )
    return config
