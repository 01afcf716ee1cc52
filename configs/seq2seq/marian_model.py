"""The Transformer encoder-decoder's model group (`config.model.family="marian"`, the layout of
transformers' `MarianMTModel`) and `use_marian(config)`, which turns a pretraining config into a
translation run with it (`rnn_model.use_seq2seq`'s data and objective, this model)."""

import ml_collections

from configs.seq2seq import rnn_model


def get_config() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.family = "marian"
    model.vocab_size = 4000  # the shared SentencePiece vocabulary (a small corpus may give fewer)
    model.hidden_size = 256  # d_model
    model.num_layers = 3  # encoder layers
    model.decoder_layers = 3
    model.num_heads = 4
    model.intermediate_size = 1024  # the encoder's feed-forward width
    model.decoder_intermediate_size = 1024
    model.max_position_embeddings = 128  # the longest source and translation
    model.hidden_act = "swish"  # opus-mt's
    model.hidden_dropout = 0.1
    model.attention_dropout = 0.0
    model.scale_embedding = True  # embeddings times sqrt(hidden_size), as Marian
    model.pad_token_id = -1  # <pad>, also the decoder's start: -1 is the last id (Marian's)
    model.eos_token_id = 0  # </s>; set from the tokenizer
    model.encoder = "marian"  # "bert": a BERT encoder warm-started from init_from (ko_en_bert2tx)
    model.dtype = "float32"
    model.param_dtype = "float32"
    model.scan_layers = False
    model.remat_policy = "none"
    return model


def use_marian(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` (a pretraining config) as a translation run with the Transformer."""
    config = rnn_model.use_seq2seq(config)
    config.model = get_config()
    return config
