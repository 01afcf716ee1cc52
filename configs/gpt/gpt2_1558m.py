"""GPT-2 XL (1.5B: L48/H1600/A25, 1024 positions, the 50257-token GPT-2 vocabulary)."""

from configs.gpt import base


def get_config():
    config = base.get_config()
    config.model.update(num_layers=48, hidden_size=1600, num_heads=25, intermediate_size=4 * 1600)
    return config
