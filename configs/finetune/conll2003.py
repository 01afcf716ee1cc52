"""CoNLL-2003 English NER (IOB1 in the files, IOB2 after reading)."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="tagging",
        train_file="$BERTJAX_DATA/conll2003/train.txt",
        eval_file="$BERTJAX_DATA/conll2003/valid.txt",
        token_column=0,
        tag_column=-1,
        scheme="IOB1",
        labels=[f"{p}-{t}" for p in "BI" for t in ("LOC", "MISC", "ORG", "PER")] + ["O"],
        max_len=128,
    )
    config.optim.learning_rate = 5e-5
    return config
