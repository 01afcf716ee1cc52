"""ELECTRA-Small (E128 H256 L12 A4, generator 1/4), Clark et al. 2020."""

from configs.electra import base


def get_config():
    return base.get_config()
