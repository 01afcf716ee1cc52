"""Korean quickstart: BERT-tiny (L2/H128/A2) on four Korean Wikipedia files, offline, minutes on a CPU.

Trains a cased WordPiece vocabulary (Hangul syllables kept whole) and the tiny model on
`ko-wikipedia/AA/wiki_00`-`wiki_03` of the shared data (4.2 MB, ~800 articles):

  bertjax pretrain --config configs/ko/quickstart.py --workdir /tmp/ko-quickstart

`--config.data.pretokenizer=morpheme` splits words into MeCab-ko morphemes first (the `korean`
extra), as KLUE-BERT does; the model then fine-tunes with configs/ko/ (set init_from).
"""

from configs import quickstart


def get_config():
    config = quickstart.get_config()
    config.data.corpus = "$BERTJAX_DATA/ko-wikipedia/AA/wiki_0[0-3]"
    config.data.lowercase = False  # Korean has no case; keep Latin names as written
    config.data.eval_fraction = 0.02
    return config
