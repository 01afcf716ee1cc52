"""GPT-2 medium (355M: L24/H1024/A16, 1024 positions, the 50257-token GPT-2 vocabulary)."""

from configs.gpt import base


def get_config():
    config = base.get_config()
    config.model.update(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4 * 1024)
    return config
