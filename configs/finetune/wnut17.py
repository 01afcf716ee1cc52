"""WNUT-17 emerging and rare entities NER (IOB2)."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="tagging",
        train_file="$BERTJAX_DATA/wnut17/train.txt",
        eval_file="$BERTJAX_DATA/wnut17/dev.txt",
        scheme="IOB2",
        labels=[
            f"{p}-{t}"
            for p in "BI"
            for t in ("corporation", "creative-work", "group", "location", "person", "product")
        ]
        + ["O"],
        max_len=128,
    )
    config.optim.learning_rate = 5e-5
    return config
