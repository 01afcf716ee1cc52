"""GPT-2 large (774M: L36/H1280/A20, 1024 positions, the 50257-token GPT-2 vocabulary)."""

from configs.gpt import base


def get_config():
    config = base.get_config()
    config.model.update(num_layers=36, hidden_size=1280, num_heads=20, intermediate_size=4 * 1280)
    return config
