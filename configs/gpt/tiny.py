"""GPT tiny (L2/H128/A2): BERT-tiny-sized, for quick experiments."""

from configs.gpt import base


def get_config():
    config = base.get_config()
    config.model.update(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=4 * 128)
    return config
