"""Test-sized recurrent encoder-decoder shared by unit tests (the ko-en data, tiny sizes)."""

from configs.seq2seq import ko_en_rnn


def get_config():
    config = ko_en_rnn.get_config()
    config.model.update(
        vocab_size=1500, hidden_size=32, rnn_size=16, embedding_size=32, hidden_dropout=0.0
    )
    config.data.max_seq_len = 16
    config.data.max_target_len = 12
    config.optim.learning_rate = 1e-2
    config.optim.warmup_steps = 2
    config.seq2seq.eval_translations = 16
    config.seq2seq.max_decode_len = 12
    config.train.update(
        global_batch_size=16, num_steps=30, log_every=10, eval_every=30, eval_batches=2
    )
    config.checkpoint.update(every_steps=30, keep=1)
    return config
