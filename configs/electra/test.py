"""Test-sized ELECTRA shared by unit tests and CPU benchmarks (the discriminator is configs/test.py's
BERT: H32 L2 A4), generator 1/2, embeddings 16 wide."""

from configs.electra import base


def get_config():
    config = base.get_config()
    config.model.update(
        vocab_size=128,
        embedding_size=16,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        generator_fraction=0.5,
    )
    config.data.max_seq_len = 16
    config.data.max_predictions = 4
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 2
    config.train.update(
        global_batch_size=8, num_steps=20, log_every=5, eval_every=10, eval_batches=2
    )
    config.checkpoint.update(every_steps=10, keep=2)
    return config
