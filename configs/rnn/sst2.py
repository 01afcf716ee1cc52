"""The sst2 fine-tuning job with the recurrent encoder trained from scratch (configs/rnn/model.py)."""

from configs.finetune import sst2
from configs.rnn import model


def get_config():
    return model.use_rnn(sst2.get_config())
