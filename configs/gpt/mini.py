"""GPT mini (L4/H256/A4): BERT-mini-sized, for quick experiments."""

from configs.gpt import base


def get_config():
    config = base.get_config()
    config.model.update(num_layers=4, hidden_size=256, num_heads=4, intermediate_size=4 * 256)
    return config
