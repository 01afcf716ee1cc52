"""KorSTS: Korean sentence-pair similarity regression (scores 0-5), read by the generic TSV reader.

Works as is: train (5,749) and dev (1,500); `sts-test.tsv` (1,379) is the held-out test set.
"""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="regression",
        train_file="$BERTJAX_DATA/kornlu/KorSTS/sts-train.tsv",
        eval_file="$BERTJAX_DATA/kornlu/KorSTS/sts-dev.tsv",
        text_a="sentence1",
        text_b="sentence2",
        label="score",
        max_len=128,
    )
    return config
