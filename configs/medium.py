"""BERT-medium (L8/H512/A8), Turc et al. 2019."""

from configs import base


def get_config():
    config = base.get_config()
    config.model.num_layers = 8
    config.model.hidden_size = 512
    config.model.num_heads = 8
    config.model.intermediate_size = 4 * 512
    return config
