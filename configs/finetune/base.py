"""Shared fine-tuning defaults; each task config imports this and sets `config.task`.

The same groups and field names as pretraining (`configs/defaults.py`); the encoder's architecture
comes from `config.init_from`: `config.model.vocab_size` and `config.model.hidden_size`, when set
(non-zero), must agree with it (checked before training), and the numerics fields (dropout,
dtypes, attention_impl, scan_layers, remat_policy) are taken from here.
"""

import ml_collections

from configs import defaults


def get_config() -> ml_collections.ConfigDict:
    config = defaults.get_config()
    config.init_from = ""  # bertjax model dir or transformers BERT dir; may start $BERTJAX_DATA
    config.eval_only = False  # True: evaluate a fine-tuned workdir given as init_from, no training
    # 0: whatever init_from has; a size set here must equal init_from's (checked before training).
    config.model.vocab_size = 0
    config.model.hidden_size = 0
    # Training from scratch (init_from empty): config.model is the architecture, tokenized with
    config.data.vocab = ""  # this vocab.txt (may start $BERTJAX_DATA)
    config.data.lowercase = True  # lower-case and strip accents, as the uncased BERT vocabularies

    config.task = task = ml_collections.ConfigDict()
    task.kind = "classification"  # "classification", "regression", "tagging" or "qa"
    task.train_file = ""  # training file; a leading $BERTJAX_DATA is resolved at run time
    task.eval_file = ""  # evaluation file (may equal train_file for QA split_by_article)
    # classification/regression: "tsv", "csv", "jsonl" ("" from the suffix), "klue-nli",
    # "klue-sts"; tagging: "conll" (or "") or "klue-ner" (KLUE's character-tagged TSV)
    task.format = ""
    task.text_a = "sentence"  # column (header name or 0-based index) of the first segment
    task.text_b = ""  # column of the second segment; "" for single-sentence tasks
    task.label = "label"  # column of the label or score
    task.header = True  # the delimited file's first row names the columns
    task.labels = []  # label names in id order; [] takes the sorted labels seen in the data
    task.token_column = 0  # tagging: column of the word
    task.tag_column = -1  # tagging: column of the tag (negative counts from the end)
    task.scheme = "IOB2"  # tagging: tag scheme of the file, "IOB2" or "IOB1"
    task.split_by_article = False  # qa: split one SQuAD file into train/eval by article
    task.split_by_guid = False  # KLUE formats: split one file into train/eval by example guid
    task.eval_fraction = 0.2  # with a split: share of articles (guids) for eval
    task.split_seed = 0  # with a split: which articles (guids) go where
    task.metric = ""  # "" the kind's default; tagging "conll" or "klue"; qa "squad" or "korquad"
    task.max_len = 128  # tokens per feature, special tokens included
    # Entity spans for entity-aware BERT (config.model.entity_vocab_size=2): "" none, "markup"
    # (inline <text:TYPE>), "jsonl" (a field "entities": [[start, end], ...] of character offsets
    # in text_a) or "gazetteer:<file>" (names one a line, longest match first); [ENT]/[/ENT] are
    # written around each span and entity_ids (1 from [ENT] to [/ENT]) fed to the model.
    # Classification and regression; QA takes "gazetteer:<file>" (questions and contexts).
    task.entities = ""
    task.doc_stride = 128  # qa: pieces between the starts of consecutive context windows
    task.max_query_length = 64  # qa: most question pieces kept
    task.max_answer_length = 30  # qa: longest predicted answer, in pieces
    task.n_best = 20  # qa: start and end candidates per window
    task.max_train_examples = 0  # use only the first N training examples (0: all)
    task.max_eval_examples = 0  # use only the first N eval examples (0: all)

    config.optim.update(learning_rate=2e-5, warmup_steps=0, warmup_fraction=0.1)
    config.train.update(
        global_batch_size=32,  # train and eval; divisible by the device count
        num_steps=0,  # > 0 overrides num_epochs
        num_epochs=3.0,
        log_every=50,
        eval_every=0,  # steps between evaluations (0: only at the end)
    )
    config.checkpoint.update(every_steps=1000, keep=1)
    return config
