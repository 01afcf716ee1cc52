"""ELECTRA pretraining (replaced-token detection): the config every ELECTRA config overrides.

The model group is BERT's plus `embedding_size`, `generator_fraction` and `tie_embeddings`; the
hidden size, layers and heads are the discriminator's. Defaults are ELECTRA-Small's shape.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    config.objective = "rtd"  # generator MLM + discriminator replaced-token detection
    model = config.model
    model.family = "electra"
    model.embedding_size = 128  # E: embedding tables, projected to each network's hidden size
    model.hidden_size = 256  # the discriminator's H
    model.num_layers = 12  # both networks' L
    model.num_heads = 4  # the discriminator's A
    model.intermediate_size = 1024  # the discriminator's MLP width
    model.generator_fraction = 0.25  # generator H, A and MLP width / the discriminator's
    model.tie_embeddings = True  # generator and discriminator share the embedding tables
    config.data.mask_rate = 0.15  # ELECTRA-Small/Base (Large: 0.25)
    config.data.mask_token_prob = 1.0  # every chosen token becomes [MASK] before the generator
    config.data.random_token_prob = 0.0
    config.rtd = rtd = ml_collections.ConfigDict()
    rtd.discriminator_weight = 50.0  # lambda: loss = generator MLM + lambda * discriminator BCE
    rtd.mle_weight = 0.0  # objective "rtd_adversarial": weight of the generator's MLM loss
    config.optim.learning_rate = 5e-4  # ELECTRA-Small
    return config
