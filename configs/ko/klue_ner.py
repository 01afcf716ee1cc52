"""KLUE-NER v1.1: Korean named entities tagged per character (PS, LC, OG, DT, TI, QT in BIO).

Each non-space character is a token (`tasks.korean.read_klue_ner`), scored as KLUE does: entity
macro F1 and character macro F1 (`config.task.metric="klue"`), beside the CoNLL entity scores.
Only the dev file is shared, so train and eval are the two sides of a seeded split by guid.
`init_from` must be a model whose vocabulary covers Hangul syllables (a bertjax vocabulary keeps
them, `keep_hangul`); an accent-stripping uncased BERT splits every syllable into jamo.
"""

from bertjax.tasks import korean
from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="tagging",
        format="klue-ner",
        train_file="$BERTJAX_DATA/klue/klue-ner-v1.1/klue-ner-v1.1_dev.tsv",
        eval_file="$BERTJAX_DATA/klue/klue-ner-v1.1/klue-ner-v1.1_dev.tsv",
        labels=list(korean.KLUE_NER_LABELS),
        split_by_guid=True,
        eval_fraction=0.2,
        metric="klue",
        max_len=128,  # the longest dev sentence has 121 non-space characters
    )
    config.optim.learning_rate = 5e-5
    return config
