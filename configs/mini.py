"""BERT-mini (L4/H256/A4), Turc et al. 2019."""

from configs import base


def get_config():
    config = base.get_config()
    config.model.num_layers = 4
    config.model.hidden_size = 256
    config.model.num_heads = 4
    config.model.intermediate_size = 4 * 256
    return config
