"""NVIDIA's two-phase LAMB recipe for BERT pretraining, shared by the configs of this folder.

Source: NVIDIA DeepLearningExamples, PyTorch/LanguageModeling/BERT, `scripts/run_pretraining.sh`
(defaults; the README's "Pre-training" section): 8 GPUs,
- phase 1: length 128, max_predictions_per_seq 20, train_batch_size 8192 per GPU through
  gradient_accumulation_steps 128 (global 65,536), LAMB, learning_rate 6e-3,
  warmup_proportion 0.2843, 7038 steps;
- phase 2: length 512, max_predictions_per_seq 80, train_batch_size 4096 per GPU through
  gradient_accumulation_steps 256 (global 32,768), learning_rate 4e-3, warmup_proportion 0.128,
  1563 steps, started from phase 1's checkpoint with the optimizer state and its step reset to 0
  (`run_pretraining.py --phase2`).
Differences: NVIDIA decays with a polynomial of power 0.5 after warmup, bertjax linearly; the
micro-batch per accumulation step (512 at 128, 128 at 512 sequences over all devices) is theirs
for 8 GPUs; on other device counts keep the global batch and change grad_accum_steps.
"""

import ml_collections


def phase1(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Phase 1 at length 128 (7038 LAMB steps of 65,536 sequences)."""
    config.data.max_seq_len = 128
    config.data.max_predictions = 20
    _lamb(config, learning_rate=6e-3, warmup_fraction=0.2843)
    config.train.global_batch_size = 65_536
    config.train.grad_accum_steps = 128
    config.train.num_steps = 7038
    return config


def phase2(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Phase 2 at length 512 (1563 steps of 32,768 sequences) from phase 1's whole train state:
    set `--config.init_from=PHASE1_WORKDIR` (its model, vocabulary and checkpoint)."""
    config.data.max_seq_len = 512
    config.data.max_predictions = 80
    _lamb(config, learning_rate=4e-3, warmup_fraction=0.128)
    config.train.global_batch_size = 32_768
    config.train.grad_accum_steps = 256
    config.train.num_steps = 1563
    config.init_train_state = True  # parameters, optimizer moments and step of phase 1
    config.train.reset_step = True  # step, optimizer counts and schedule restart (NVIDIA)
    return config


def _lamb(config, *, learning_rate: float, warmup_fraction: float) -> None:
    config.optim.optimizer = "lamb"
    config.optim.learning_rate = learning_rate
    config.optim.warmup_steps = 0  # warmup_fraction of the phase's steps, as warmup_proportion
    config.optim.warmup_fraction = warmup_fraction
    config.optim.weight_decay = 0.01
    config.train.log_every = 10
    config.train.eval_every = 500
    config.checkpoint.every_steps = 200  # as save_checkpoint_steps
