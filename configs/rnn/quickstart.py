"""The README's main job with the recurrent encoder: a BiLSTM pretrained with masked LM on
Python's reference documentation, so it can be fine-tuned like BERT (configs/rnn/model.py)."""

from configs import quickstart
from configs.rnn import model


def get_config():
    config = model.use_rnn(quickstart.get_config())
    config.model.vocab_size = quickstart.get_config().model.vocab_size  # the vocab to train
    return config
