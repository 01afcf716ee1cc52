"""The recurrent encoder-decoder's model group (`config.model.family="rnn_seq2seq"`) and
`use_seq2seq(config)`, which turns a pretraining config into a translation run: the objective
`seq2seq`, SentencePiece, parallel pairs and their options."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.family = "rnn_seq2seq"
    model.vocab_size = 2000  # the shared SentencePiece vocabulary (a small corpus may give fewer)
    model.hidden_size = 128  # decoder state, memory, attention and attentional vector width
    model.cell = "lstm"  # "lstm" or "gru"
    model.num_layers = 1  # bidirectional encoder layers
    model.decoder_layers = 1  # decoder layers
    model.rnn_size = 128  # encoder state per direction
    model.embedding_size = 128  # the word embedding shared by encoder and decoder
    model.attention = "additive"  # "none" (the bottleneck), "additive", "dot" or "general"
    model.hidden_dropout = 0.2  # embeddings, between encoder layers, before the output layer
    model.eos_token_id = 0  # </s>; set from the tokenizer
    model.dtype = "float32"
    model.param_dtype = "float32"
    return model


def use_seq2seq(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` (a pretraining config) as a translation run with the recurrent model."""
    config.model = get_config()
    config.objective = "seq2seq"  # target cross-entropy (bertjax.objectives.seq2seq)
    data = config.data
    data.tokenizer = "sentencepiece"  # Marian's files: source.spm, target.spm, vocab.json
    data.instances = "parallel_pairs"  # (source, target) ids
    data.lowercase = False
    # parallel files: tables (.tsv/.csv/.jsonl) with the reader's columns, or source and target
    # files alternately with reader.aligned=True; builtin:korsts-ko-en/train is the shared ko-en
    data.corpus = "builtin:korsts-ko-en/train"
    data.eval_corpus = "builtin:korsts-ko-en/dev"  # held-out pairs ("": data.eval_fraction)
    data.reader = ml_collections.ConfigDict()
    data.reader.source_column = "ko"  # table column of the source text
    data.reader.target_column = "en"  # table column of the target text
    data.reader.aligned = False  # True: corpus files are source, target, source, target, ...
    data.max_seq_len = 40  # source tokens, </s> included (longer sources are cut)
    data.max_target_len = 40  # target tokens, </s> included
    config.seq2seq = ml_collections.ConfigDict()
    config.seq2seq.label_smoothing = 0.1  # eps of the target cross-entropy
    config.seq2seq.eval_translations = 500  # dev pairs translated (greedy) for BLEU/chrF; 0: none
    config.seq2seq.max_decode_len = 64  # the longest translation in evaluation
    return config
