"""The conll2003 fine-tuning job with the recurrent encoder trained from scratch (configs/rnn/model.py)."""

from configs.finetune import conll2003
from configs.rnn import model


def get_config():
    return model.use_rnn(conll2003.get_config())
