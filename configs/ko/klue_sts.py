"""KLUE-STS v1.1: Korean sentence-pair similarity, a score in [0, 5] (Pearson, Spearman).

Only the dev file is shared (519 pairs), so train and eval are a seeded split by guid.
"""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="regression",
        format="klue-sts",
        train_file="$BERTJAX_DATA/klue/klue-sts-v1.1/klue-sts-v1.1_dev.json",
        eval_file="$BERTJAX_DATA/klue/klue-sts-v1.1/klue-sts-v1.1_dev.json",
        split_by_guid=True,
        eval_fraction=0.2,
        max_len=128,
    )
    return config
