"""Korean to English with the recurrent encoder-decoder with additive attention, on a CPU.

The data: the KorSTS rows paired with the STS-B rows they translate (10,536 training pairs,
2,769 dev pairs; `bertjax.data.parallel.write_korsts_pairs`, written to WORKDIR/corpus), a
2,000-token SentencePiece vocabulary shared by both languages, a 1-layer BiLSTM encoder (128 per
direction) and a 1-layer LSTM decoder (128) with Bahdanau attention, 1,200 steps of 32 pairs.
Evaluation translates 500 dev pairs greedily and reports BLEU and chrF (sacrebleu) with the
loss, perplexity and token accuracy.

    bertjax pretrain --config configs/seq2seq/ko_en_rnn.py --workdir /tmp/ko-en-rnn
    bertjax translate /tmp/ko-en-rnn/model --text "비행기가 이륙하고 있다."

Measured (2026-12-03, 2 CPU cores shared with six other jobs, load average ~12; this config as
it is): 1,200 steps in 28.8 min wall (273 s of CPU time; 87% of the wall in training steps),
dev (500 pairs, greedy) BLEU 6.6 / chrF 20.8 at step 600 and BLEU 14.4 / chrF 27.4 at step
1,200 (loss 3.33, perplexity 13.4, token accuracy 0.47); `bertjax translate --beam 4` on the
same 500 pairs: BLEU 15.4 / chrF 29.6. On an idle machine expect a few minutes.
"""

from configs import base
from configs.seq2seq import rnn_model


def get_config():
    config = rnn_model.use_seq2seq(base.get_config())
    config.optim.learning_rate = 2e-3
    config.optim.warmup_steps = 100
    config.optim.weight_decay = 0.0
    config.train.update(
        global_batch_size=32, num_steps=1200, log_every=50, eval_every=600, eval_batches=20
    )
    config.checkpoint.update(every_steps=600, keep=2)
    return config
