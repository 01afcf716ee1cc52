"""What every job shares: the model (BERT-base, L12/H768/A12), optimizer, loop, mesh, checkpoints,
multi-process settings and the input pipeline. `base.py` (pretraining) and `finetune/base.py` build
on it, so both jobs use the same field names."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = model = ml_collections.ConfigDict()
    model.family = "bert"  # the model family (bertjax.models registry)
    model.vocab_size = 30522  # rows of the word embedding; >= the vocab file's size
    model.hidden_size = 768  # H
    model.num_layers = 12  # L
    model.num_heads = 12  # A; hidden_size must be divisible by it
    model.intermediate_size = 3072  # MLP width, 4H
    model.max_position_embeddings = 512  # learned positions; >= data.max_seq_len
    model.type_vocab_size = 2  # segments A and B
    model.hidden_act = "gelu"  # "gelu" (exact, as BERT) or "gelu_tanh"
    model.hidden_dropout = 0.1  # dropout on embeddings and residual branches
    model.attention_dropout = 0.1  # dropout on attention probabilities (xla attention only)
    model.layer_norm_eps = 1e-12  # LayerNorm epsilon, as BERT
    model.initializer_range = 0.02  # stddev of the truncated-free normal initializer
    model.pad_token_id = 0  # id of [PAD]
    # compute dtype: float32 or bfloat16 (softmax, LayerNorm, loss stay fp32); float16 only for
    # inference (training it would need loss scaling)
    model.dtype = "float32"
    model.param_dtype = "float32"  # storage dtype of parameters
    model.attention_impl = (
        "xla"  # "xla" anywhere; "cudnn" (NVIDIA GPUs) needs bf16, no attn dropout
    )
    model.scan_layers = False  # stack layers with nn.scan: faster compile for deep models
    model.remat_policy = "none"  # "none", "full" or "dots": recompute activations in backward
    # Entity-aware BERT: rows of an entity embedding added per token from `entity_ids` (0: off;
    # 2: entity or not, with config.task.entities / config.data.entities naming the span source).
    # transformers' BertModel has no such table: export to Hugging Face refuses it.
    model.entity_vocab_size = 0

    config.data = data = ml_collections.ConfigDict()
    data.worker_count = 0  # grain worker processes for the input pipeline (0: in-process)
    data.prefetch = 2  # batches prefetched to the device
    # Invalid UTF-8 in any text read (corpus, task files, gazetteers): False repairs it as U+FFFD
    # and reports the repaired lines per file; True refuses the file naming file:line:column.
    data.strict_utf8 = False

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adamw"  # "adamw" (BERT's Adam with decoupled weight decay) or "lamb"
    optim.learning_rate = 1e-4  # peak learning rate after warmup
    optim.warmup_steps = 10_000  # linear warmup from 0; 0: warmup_fraction of the steps
    optim.warmup_fraction = 0.0  # share of the steps with linear warmup (when warmup_steps=0)
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.eps = 1e-6
    optim.weight_decay = 0.01  # not applied to LayerNorm parameters and biases
    optim.grad_clip_norm = 1.0  # global-norm clipping; 0 disables

    config.train = train = ml_collections.ConfigDict()
    train.global_batch_size = 256  # sequences per optimizer step, over all devices
    train.grad_accum_steps = 1  # micro-batches per optimizer step
    train.num_steps = 1_000_000  # optimizer steps (the schedule decays linearly to 0); 0: epochs
    train.num_epochs = 0.0  # passes over the training examples, when num_steps=0
    train.seed = 0  # parameter init, masking, dropout and data order
    train.log_every = 100  # steps between metric lines
    train.eval_every = 10_000  # steps between held-out evaluations (0: only at the end)
    train.eval_batches = 20  # batches per held-out evaluation (tasks evaluate the whole file)
    train.peak_tflops = 0.0  # per-device peak for MFU; 0 looks it up from the device kind
    # Steps with a non-finite loss or gradient are skipped (parameters kept); this many in a row
    # stop the run with an error naming the step (exit status 3). 0: never stop.
    train.max_bad_steps = 10
    # Seconds without a completed step (compilation, evaluation and saving included) after which
    # every thread's Python stack is logged and the process exits with status 4. 0: off.
    train.watchdog_seconds = 0.0
    # "A:B": a jax.profiler trace of steps A to B into workdir/tensorboard (TensorBoard's profile
    # plugin reads it); "A": one step; "": off. Pick steps after the first, which compiles.
    train.profile_steps = ""
    # Stop when an evaluation metric reaches a target or stops improving
    # (bertjax.training.early_stop); the step and time of reaching the target go into the final
    # metrics. metric "": off.
    train.early_stop = early_stop = ml_collections.ConfigDict()
    early_stop.metric = ""  # a key of the job's evaluation, e.g. "mlm_accuracy", "f1", "loss"
    # stop once the metric is at least (mode max) or at most (mode min) this; None: no target
    early_stop.target = ml_collections.config_dict.placeholder(float)
    early_stop.mode = "max"  # "max" or "min": which way is better
    early_stop.patience = 0  # stop after this many evaluations without a new best (0: never)

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = -1  # pure data parallel; -1 takes all remaining devices
    mesh.fsdp = 1  # parameters and optimizer state sharded over this axis
    mesh.tensor = 1  # heads, MLP and vocabulary split over this axis
    # Logical axis name -> mesh axis (or axes, or None for replicated).
    mesh.logical_axis_rules = [
        ("act_batch", ("data", "fsdp")),
        ("act_length", None),
        ("act_embed", None),
        ("act_heads", "tensor"),
        ("act_kv", None),
        ("act_mlp", "tensor"),
        ("act_vocab", "tensor"),
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv", None),
        ("mlp", "tensor"),
        ("position", None),
        ("token_type", None),
        ("entity", None),
        ("norm", None),
        ("classes", None),
        ("layers", None),
        # the recurrent family (bertjax.models.rnn); state axes stay local: no collective per step
        ("rnn_in", "fsdp"),
        ("rnn_gates", None),
        ("rnn_hidden", None),
        ("rnn_state", None),
    ]

    config.checkpoint = checkpoint = ml_collections.ConfigDict()
    checkpoint.every_steps = 10_000  # steps between checkpoints (and one at the end)
    checkpoint.keep = 3  # most recent checkpoints kept
    # Also keep the checkpoint with the best evaluation of this metric (e.g. "accuracy", "f1",
    # "pearson", "loss"; a key of the job's evaluation); a checkpoint is saved at every evaluation.
    # "": off. The best step is reported in eval_metrics.json (fine-tuning) under "best".
    checkpoint.best_metric = ""
    checkpoint.best_mode = "max"  # "max" or "min": which value of best_metric is best
    checkpoint.async_save = True  # write in the background while training continues

    config.distributed = distributed = ml_collections.ConfigDict()
    # "none": one process; "auto": jax.distributed.initialize() detects the cluster (TPU pod slice,
    # SLURM, Open MPI); "explicit": the coordinator and process fields below (`bertjax launch` sets
    # them). Explicit: one value per process (e.g. --config.distributed.process_id=$RANK).
    distributed.mode = "none"
    distributed.coordinator_address = ""  # explicit: HOST:PORT where process 0 runs the coordinator
    distributed.num_processes = 1  # explicit: processes in the job
    distributed.process_id = 0  # explicit: this process, in [0, num_processes)
    distributed.initialization_timeout = 300  # seconds to wait for all processes to connect
    distributed.heartbeat_timeout = 100  # seconds without heartbeats before the job is stopped
    distributed.shutdown_timeout = 300  # seconds a finished process waits for the others
    distributed.cpu_collectives = "gloo"  # CPU devices across processes: "gloo" or "mpi"
    return config
