"""SST-2 at a laptop's scale: the first 2,000 training sentences for one epoch (62 steps of 32)
at max_len 64, evaluated on the full dev set (872). What a pretraining run's end message
suggests; `sst2_minilm.py` runs it from a real pretrained encoder.
"""

from configs.finetune import sst2


def get_config():
    config = sst2.get_config()
    config.task.update(max_len=64, max_train_examples=2000)
    config.optim.learning_rate = 5e-5
    config.train.update(num_epochs=1.0, log_every=10)
    return config
