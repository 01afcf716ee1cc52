"""The train state and steps, the one trainer, the jobs (pretraining, fine-tuning), optimizer,
checkpoints, sharding and multi-process setup."""
