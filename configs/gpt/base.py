"""GPT-2 small (124M: L12/H768/A12) causal-LM pretraining: the config every GPT config overrides.

The same job as BERT pretraining with another family, objective, tokenizer and instance builder:
documents tokenised with byte-level BPE, joined with <|endoftext|> and cut into blocks.
"""

from configs import base


def get_config():
    config = base.get_config()
    config.objective = "causal_lm"  # next-token cross-entropy (bertjax.objectives.causal_lm)
    model = config.model
    model.family = "gpt"
    del model["type_vocab_size"]  # GPT has no segment embedding
    del model["pad_token_id"]  # padding is masked out; GPT has no pad token
    del model["entity_vocab_size"]  # the entity embedding is an option of the BERT family
    model.eos_token_id = 50256  # <|endoftext|>; set from the tokenizer when one is trained
    model.vocab_size = 50257  # GPT-2's byte-level BPE
    model.max_position_embeddings = 1024
    model.hidden_act = "gelu_tanh"  # GPT-2's "gelu_new"
    model.layer_norm_eps = 1e-5
    data = config.data
    data.tokenizer = "byte_bpe"  # trained on data.corpus unless data.vocab is a GPT-2 vocab.json
    data.instances = "lm_blocks"  # documents + <|endoftext|>, concatenated, cut into blocks
    data.lowercase = False
    data.max_seq_len = 1024  # tokens per block
    config.optim.learning_rate = 6e-4
    config.optim.warmup_steps = 2000
    config.optim.b2 = 0.95
    config.optim.eps = 1e-8
    config.optim.weight_decay = 0.1
    return config
