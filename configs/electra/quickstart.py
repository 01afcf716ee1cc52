"""ELECTRA's first job: the tiny ELECTRA on Python's reference documentation, offline, minutes on a
CPU (as `configs/quickstart.py` for BERT)."""

from configs.electra import tiny


def get_config():
    config = tiny.get_config()
    config.model.vocab_size = 8000  # the trained vocabulary's size (it may come out smaller)
    config.model.max_position_embeddings = 128
    config.data.corpus = "builtin:python-docs"
    config.data.eval_fraction = 0.05
    config.data.max_seq_len = 128
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 60
    config.train.global_batch_size = 32
    config.train.num_steps = 600
    config.train.log_every = 50
    config.train.eval_every = 200
    config.train.eval_batches = 8
    config.checkpoint.every_steps = 200
    return config
