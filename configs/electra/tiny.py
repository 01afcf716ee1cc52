"""A tiny ELECTRA (E64 H128 L2 A2, generator 1/2) for quick CPU runs."""

from configs.electra import base


def get_config():
    config = base.get_config()
    config.model.update(
        embedding_size=64,
        hidden_size=128,
        num_layers=2,
        num_heads=2,
        intermediate_size=4 * 128,
        generator_fraction=0.5,
    )
    return config
