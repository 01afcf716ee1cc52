"""GLUE RTE: sentence-pair textual entailment (binary)."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="classification",
        train_file="$BERTJAX_DATA/glue-rte/train.tsv",
        eval_file="$BERTJAX_DATA/glue-rte/dev.tsv",
        text_a="sentence1",
        text_b="sentence2",
        label="label",
        labels=["entailment", "not_entailment"],
        max_len=128,
    )
    config.optim.learning_rate = 3e-5
    return config
