"""BERT-base (L12/H768/A12) pretraining: the config every pretraining config overrides."""

import ml_collections

from configs import defaults


def get_config() -> ml_collections.ConfigDict:
    config = defaults.get_config()
    config.objective = "mlm_nsp"  # "mlm_nsp" (BERT), "mlm" (no NSP) or "causal_lm" (GPT)
    # continue pretraining a bertjax model dir, pretraining workdir or transformers BERT dir (its
    # architecture, vocabulary and tokenizer options; may start $BERTJAX_DATA); "": from scratch
    config.init_from = ""
    # with init_from a pretraining workdir: start from its whole train state (parameters,
    # optimizer moments, step), as phase 2 of the two-phase recipe (bertjax.training.two_phase)
    config.init_train_state = False
    # with init_train_state: True restarts the step, the optimizer's step counts and the schedule
    # at 0 (NVIDIA's phase 2); False continues them (train.num_steps counts both phases)
    config.train.reset_step = True
    data = config.data
    # text files or globs, comma-separated (each may start $BERTJAX_DATA); prepared into
    # workdir/data if set
    data.corpus = ""
    data.dir = ""  # prepared shards (bertjax prepare); default workdir/data
    data.vocab = ""  # vocab.txt (or a BPE vocab.json); if empty one is trained on data.corpus
    data.tokenizer = "wordpiece"  # what is trained: "wordpiece" (BERT) or "byte_bpe" (GPT-2)
    data.instances = "nsp_pairs"  # "nsp_pairs" ([CLS] A [SEP] B [SEP]) or "lm_blocks" (GPT)
    data.document_attention = False  # lm_blocks: attention and positions restart per document
    data.extra_vocab = ""  # with init_from: file of new tokens (one a line) appended to its vocab
    data.lowercase = True  # lower-case (and strip accents) when tokenizing
    data.pretokenizer = "whitespace"  # vocab trained here: "whitespace" (BERT) or "morpheme" (ko)
    data.max_seq_len = 128  # tokens per instance, [CLS] and [SEP]s included
    data.short_seq_prob = 0.1  # share of instances with a shorter random target length
    data.eval_fraction = 0.01  # share of documents held out for evaluation
    data.max_predictions = 20  # masked positions per sequence (the gathered MLM head's width)
    data.mask_rate = 0.15  # share of real tokens chosen for MLM (MosaicBERT uses 0.3)
    data.whole_word_masking = False  # mask all WordPiece pieces of a word together
    data.mask_token_prob = 0.8  # share of chosen tokens replaced by [MASK] (ELECTRA: 1.0)
    data.random_token_prob = 0.1  # share replaced by a random token (ELECTRA: 0.0); rest kept
    # Entity-aware BERT (needs model.entity_vocab_size=2): "" none, "markup" (inline
    # <text:TYPE>) or "gazetteer:<file>" (names one a line, or a WikiExtractor file's titles;
    # may start $BERTJAX_DATA): [ENT]/[/ENT] around each span, entity_ids fed to the model
    data.entities = ""
    data.entity_masking = False  # mask each entity as one word (needs whole_word_masking)
    data.pack_sequences = False  # several instances per row, attention kept within each
    data.max_pack_size = 3  # instances per packed row at most

    return config
