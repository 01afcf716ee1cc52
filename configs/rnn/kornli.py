"""KorNLI fine-tuning with the recurrent encoder trained from scratch (configs/rnn/model.py)."""

from configs.ko import kornli
from configs.rnn import model


def get_config():
    return model.use_rnn(kornli.get_config())
