"""Test-sized recurrent encoder shared by unit tests (configs/test.py's data and loop)."""

from configs import test
from configs.rnn import model


def get_config():
    config = model.use_rnn(test.get_config())
    config.model.update(
        vocab_size=128, hidden_size=32, embedding_size=32, num_layers=2, rnn_size=16
    )
    return config
