"""GPT-2 small (124M: L12/H768/A12, 1024 positions, the 50257-token GPT-2 vocabulary)."""

from configs.gpt import base


def get_config():
    config = base.get_config()
    config.model.update(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=4 * 768)
    return config
