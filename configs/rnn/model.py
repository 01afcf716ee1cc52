"""The recurrent baseline's architecture (`config.model.family="rnn"`): a 2-layer BiLSTM.

`use_rnn(config)` turns a pretraining or fine-tuning config into the same job with this encoder,
so the comparison with BERT changes nothing else (data, task, loop, metrics, checkpoints).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.family = "rnn"
    model.vocab_size = 0  # 0: the vocabulary's size
    model.hidden_size = 256  # width the heads see (the output projection)
    model.cell = "lstm"  # "lstm" or "gru"
    model.num_layers = 2  # bidirectional layers
    model.rnn_size = 256  # state size per direction
    model.type_vocab_size = 2  # segment embeddings for sentence pairs (0: none)
    model.embedding_size = 256  # == hidden_size, so the MLM decoder ties to the embedding
    model.hidden_dropout = 0.1  # embeddings, between recurrent layers, heads
    model.hidden_act = "gelu"  # the MLM head's activation
    model.layer_norm_eps = 1e-12  # the MLM head's LayerNorm
    model.pooling = "final"  # pooled_output: "final" states, masked "mean" or masked "max"
    model.initializer_range = 0.02
    model.pad_token_id = 0
    model.dtype = "float32"
    model.param_dtype = "float32"
    return model


def use_rnn(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the recurrent encoder, trained from scratch on the uncased BERT vocabulary
    (fine-tuning) or on the job's own vocabulary (pretraining, MLM without NSP)."""
    config.model = get_config()
    if "task" in config:  # fine-tuning from scratch
        config.init_from = ""
        config.data.vocab = "$BERTJAX_DATA/vocab/bert-base-uncased-vocab.txt"
        config.optim.learning_rate = 1e-3  # a recurrent net from scratch, not a pretrained BERT
    else:
        config.objective = "mlm"
    return config
