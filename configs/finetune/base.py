"""Shared fine-tuning defaults; each task config imports this and sets `config.task`.

The encoder's architecture comes from `config.init_from`; `config.model.vocab_size` and
`config.model.hidden_size`, when set (non-zero), must agree with it (checked before training), and the numerics fields
(dropout, dtypes, attention_impl, scan_layers, remat_policy) are taken from here.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    pretrain = base.get_config()
    config = ml_collections.ConfigDict()
    config.init_from = ""  # bertjax model dir or transformers BERT dir; may start $BERTJAX_DATA
    config.eval_only = False  # True: evaluate a fine-tuned workdir given as init_from, no training

    config.model = pretrain.model  # same fields as configs/base.py (architecture from init_from)
    # 0: whatever init_from has; a size set here must equal init_from's (checked before training).
    config.model.vocab_size = 0
    config.model.hidden_size = 0

    config.task = task = ml_collections.ConfigDict()
    task.kind = "classification"  # "classification", "regression", "tagging" or "qa"
    task.train_file = ""  # training file; a leading $BERTJAX_DATA is resolved at run time
    task.eval_file = ""  # evaluation file (may equal train_file for QA split_by_article)
    task.format = ""  # classification/regression: "tsv", "csv", "jsonl" ("" from the suffix)
    task.text_a = "sentence"  # column (header name or 0-based index) of the first segment
    task.text_b = ""  # column of the second segment; "" for single-sentence tasks
    task.label = "label"  # column of the label or score
    task.header = True  # the delimited file's first row names the columns
    task.labels = []  # label names in id order; [] takes the sorted labels seen in the data
    task.token_column = 0  # tagging: column of the word
    task.tag_column = -1  # tagging: column of the tag (negative counts from the end)
    task.scheme = "IOB2"  # tagging: tag scheme of the file, "IOB2" or "IOB1"
    task.split_by_article = False  # qa: split one SQuAD file into train/eval by article
    task.eval_fraction = 0.2  # qa with split_by_article: share of articles for eval
    task.split_seed = 0  # qa with split_by_article: which articles go where
    task.max_len = 128  # tokens per feature, special tokens included
    task.doc_stride = 128  # qa: pieces between the starts of consecutive context windows
    task.max_query_length = 64  # qa: most question pieces kept
    task.max_answer_length = 30  # qa: longest predicted answer, in pieces
    task.n_best = 20  # qa: start and end candidates per window
    task.max_train_examples = 0  # use only the first N training examples (0: all)
    task.max_eval_examples = 0  # use only the first N eval examples (0: all)

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adamw"  # "adamw" or "lamb"
    optim.learning_rate = 2e-5  # peak learning rate after warmup
    optim.warmup_fraction = 0.1  # share of the steps with linear warmup from 0
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.eps = 1e-6
    optim.weight_decay = 0.01  # not applied to LayerNorm parameters and biases
    optim.grad_clip_norm = 1.0  # global-norm clipping; 0 disables

    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 32  # global batch (train and eval); divisible by the device count
    train.num_epochs = 3.0  # passes over the training features
    train.num_steps = 0  # > 0 overrides num_epochs
    train.seed = 0  # head init, dropout and data order
    train.log_every = 50  # steps between metric lines
    train.eval_every = 0  # steps between evaluations (0: only at the end)

    config.mesh = pretrain.mesh  # device mesh and logical axis rules, as in pretraining

    config.checkpoint = checkpoint = ml_collections.ConfigDict()
    checkpoint.every_steps = 1000  # steps between checkpoints (and one at the end)
    checkpoint.keep = 1  # most recent checkpoints kept
    checkpoint.async_save = True  # write in the background while training continues
    config.distributed = pretrain.distributed  # multi-process settings, as in pretraining
    return config
