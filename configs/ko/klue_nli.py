"""KLUE-NLI v1.1: Korean premise/hypothesis pairs, entailment/neutral/contradiction.

Only the dev file is shared (3,000 pairs), so train and eval are a seeded split by guid.
"""

from bertjax.tasks import korean
from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="classification",
        format="klue-nli",
        train_file="$BERTJAX_DATA/klue/klue-nli-v1.1/klue-nli-v1.1_dev.json",
        eval_file="$BERTJAX_DATA/klue/klue-nli-v1.1/klue-nli-v1.1_dev.json",
        labels=list(korean.KLUE_NLI_LABELS),
        split_by_guid=True,
        eval_fraction=0.2,
        max_len=128,
    )
    return config
