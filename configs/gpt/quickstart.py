"""The GPT quickstart: a small GPT on Python's own reference documentation, offline, minutes on
a CPU.

Trains a byte-level BPE tokenizer and a L2/H128/A4 decoder on the pydoc topics that ship with
CPython, then `bertjax generate WORKDIR/model "The"`. Point it at your own text with
--config.data.corpus='my_corpus/*.txt'.
"""

from configs.gpt import base


def get_config():
    config = base.get_config()
    config.model.update(
        vocab_size=4096,  # the trained vocabulary's size (it may come out smaller)
        eos_token_id=0,  # <|endoftext|> comes first in a trained byte-level BPE
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        intermediate_size=512,
        max_position_embeddings=128,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    config.data.corpus = "builtin:python-docs"
    config.data.eval_fraction = 0.05
    config.data.max_seq_len = 128
    config.optim.learning_rate = 2e-3
    config.optim.warmup_steps = 40
    config.train.global_batch_size = 16
    config.train.num_steps = 400
    config.train.log_every = 50
    config.train.eval_every = 100
    config.train.eval_batches = 8
    config.checkpoint.every_steps = 200
    return config
