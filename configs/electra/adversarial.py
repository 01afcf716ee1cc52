"""ELECTRA-Small with an adversarially trained generator (Clark et al. 2020, appendix F): the
generator is rewarded for fooling the discriminator, by policy gradient, instead of trained by
maximum likelihood. `config.rtd.mle_weight` > 0 mixes the MLM loss back in."""

from configs.electra import base


def get_config():
    config = base.get_config()
    config.objective = "rtd_adversarial"
    return config
