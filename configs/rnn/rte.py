"""The rte fine-tuning job with the recurrent encoder trained from scratch (configs/rnn/model.py)."""

from configs.finetune import rte
from configs.rnn import model


def get_config():
    return model.use_rnn(rte.get_config())
