"""KorNLI (XNLI part): Korean sentence-pair inference, read by the generic TSV reader.

Works as is. There is no KorNLI train set here (the MNLI/SNLI translations were not obtainable),
so this trains on the XNLI dev translation (2,490 pairs) and evaluates on XNLI test (5,010).
"""

from bertjax.tasks import korean
from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="classification",
        train_file="$BERTJAX_DATA/kornlu/KorNLI/xnli.dev.ko.tsv",
        eval_file="$BERTJAX_DATA/kornlu/KorNLI/xnli.test.ko.tsv",
        text_a="sentence1",
        text_b="sentence2",
        label="gold_label",
        labels=list(korean.KLUE_NLI_LABELS),
        max_len=128,
    )
    config.optim.learning_rate = 3e-5
    return config
