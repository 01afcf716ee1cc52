"""BERT-large (L24/H1024/A16); layers scanned for compile time."""

from configs import base


def get_config():
    config = base.get_config()
    config.model.num_layers = 24
    config.model.hidden_size = 1024
    config.model.num_heads = 16
    config.model.intermediate_size = 4 * 1024
    config.model.scan_layers = True
    return config
