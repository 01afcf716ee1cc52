"""Korean to English with a pretrained Korean BERT as the encoder and a fresh Transformer
decoder (BERT2RND, Rothe et al. 2020), on a CPU.

`config.init_from` is the BERT (a bertjax model directory or pretraining workdir, e.g. of
`configs/ko/...` on the shared ko-wikipedia, or a transformers BERT directory): the encoder takes
its architecture, weights and WordPiece tokenizer (for both languages, `[SEP]` ending each
sequence); `config.model` gives the decoder (`decoder_layers`, `decoder_intermediate_size`; its
width and heads are the BERT's), which starts fresh with the LM head
(`bertjax.interop.warm_start`). The data, objective and evaluation are `ko_en_transformer.py`'s.

    bertjax pretrain --config configs/seq2seq/ko_en_bert2tx.py --workdir /tmp/ko-en-bert2tx \
        --config.init_from=/tmp/ko-bert/model
"""

from configs.seq2seq import ko_en_transformer


def get_config():
    config = ko_en_transformer.get_config()
    config.init_from = ""  # the Korean BERT (required: set it on the command line)
    # "pretrained": the encoder starts from the BERT's weights; "random": the same model (the
    # BERT's architecture and vocabulary, the same fresh decoder) from scratch, the baseline
    config.encoder_init = "pretrained"
    config.model.encoder = "bert"  # the BERT's encoder; its fields below are the BERT's
    config.model.hidden_act = "gelu"  # BERT's (the decoder's too)
    config.model.decoder_layers = 3  # the fresh decoder
    config.model.decoder_intermediate_size = 1024
    config.data.tokenizer = "wordpiece"  # the BERT's vocabulary, for both languages
    config.optim.learning_rate = 5e-4  # the pretrained encoder with the fresh decoder
    return config
