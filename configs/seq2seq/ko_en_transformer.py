"""Korean to English with the Transformer encoder-decoder (Marian's layout), on a CPU.

The data and vocabulary of `ko_en_rnn.py` (the KorSTS/STS-B pairs, a 4,000-token SentencePiece
vocabulary shared by both languages); a 3+3-layer Transformer (hidden 256, 4 heads, feed-forward
1024, swish, post-LayerNorm, sinusoidal positions, tied embeddings). Evaluation translates 500 dev
pairs greedily and reports BLEU and chrF with the loss, perplexity and token accuracy.

    bertjax pretrain --config configs/seq2seq/ko_en_transformer.py --workdir /tmp/ko-en-tx
    bertjax translate /tmp/ko-en-tx/model --text "비행기가 이륙하고 있다." --beam 4

The model directory exports to a transformers `MarianMTModel` (`bertjax export-hf`).
"""

from configs import base
from configs.seq2seq import marian_model


def get_config():
    config = marian_model.use_marian(base.get_config())
    config.optim.learning_rate = 7e-4
    config.optim.warmup_steps = 300
    config.optim.weight_decay = 0.0
    config.seq2seq.label_smoothing = 0.1
    config.train.update(
        global_batch_size=64, num_steps=3000, log_every=100, eval_every=1000, eval_batches=20
    )
    config.checkpoint.update(every_steps=1000, keep=2)
    return config
