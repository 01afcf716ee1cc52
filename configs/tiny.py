"""BERT-tiny (L2/H128/A2), Turc et al. 2019."""

from configs import base


def get_config():
    config = base.get_config()
    config.model.num_layers = 2
    config.model.hidden_size = 128
    config.model.num_heads = 2
    config.model.intermediate_size = 4 * 128
    return config
