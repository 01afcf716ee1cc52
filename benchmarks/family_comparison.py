"""The config-swap experiment: model families pretrained on one corpus, fine-tuned on the same tasks.

Every arm is the same job with another model family or objective (issues 13, 14, 15): the same
corpus, sequence length, batch, optimizer settings, fine-tuning data and settings, through the
one trainer. Pretraining arms (`--arms`):

  bert          configs/mini.py, BERT-mini (L4/H256/A4) with MLM + NSP
  gpt           configs/gpt/mini.py, a GPT of the same shape, causal LM on blocks of its own
                byte-level BPE of the same vocabulary size; the same steps, so the same tokens
  electra       configs/electra: a discriminator of BERT-mini's shape (embeddings 128), generator
                1/4, replaced-token detection; the steps that give BERT's pretraining FLOPs
  lstm_mlm      configs/rnn/model.py: a 2-layer BiLSTM (state 256) with MLM on BERT's instances
                and vocabulary, BERT's steps (the same tokens)
  lstm_scratch  the same BiLSTM with no pretraining (fine-tuned from random weights)

The WordPiece arms share one vocabulary and one set of prepared instances. `--points 2` also
fine-tunes BERT's and ELECTRA's checkpoints at half their pretraining budget on `--budget_tasks`
(the first seed; for the score against pretraining FLOPs).
Each fine-tuning run is one (arm, task, seed, budget); `--matrix` says which tasks each arm runs.
Results go to `OUT/results.jsonl` (one line a run; a rerun skips runs already there), the table
to `OUT/table.md`, plots to `OUT/loss_vs_tokens.png` and `OUT/score_vs_flops.png`:

  python benchmarks/family_comparison.py --out /tmp/families

Tokens seen are steps x batch x length (padding included; GPT blocks have none, BERT instances
are full length but for `short_seq_prob`). Pretraining FLOPs are the objectives'
`flops_per_sequence` (ELECTRA's counts the generator) x sequences.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("BERTJAX_DATA", REPO.parent / "shared" / "data"))
if str(REPO) not in sys.path:  # `configs.rnn.model.use_rnn` swaps the encoder
    sys.path.insert(0, str(REPO))

PRETRAINING = {
    "bert": "configs/mini.py",
    "gpt": "configs/gpt/mini.py",
    "electra": "configs/electra/base.py",
    "lstm_mlm": "configs/mini.py",
}
ARMS = (*PRETRAINING, "lstm_scratch")
RNN_ARMS = ("lstm_mlm", "lstm_scratch")
TASKS = {  # name: (config, metric reported, eval rows kept)
    "sst2": ("configs/finetune/sst2.py", "accuracy", 0),
    "rte": ("configs/finetune/rte.py", "accuracy", 0),
    "stsb": ("configs/finetune/stsb.py", "pearson", 0),
    "conll2003": ("configs/finetune/conll2003.py", "f1", 1000),
    "kornli": ("configs/ko/kornli.py", "accuracy", 2000),
}
# What each arm is fine-tuned on: GPT against BERT (issue 13), ELECTRA against BERT (issue 14),
# the recurrent baselines against BERT (issue 15).
MATRIX = {
    "bert": ("sst2", "rte", "stsb", "conll2003", "kornli"),
    "gpt": ("sst2", "rte"),
    "electra": ("sst2", "rte", "stsb"),
    "lstm_mlm": ("sst2", "conll2003", "kornli"),
    "lstm_scratch": ("sst2", "conll2003", "kornli"),
}
BUDGET_ARMS = ("bert", "electra")  # fine-tuned at every budget (--points) on --budget_tasks


def default_corpus() -> str:
    """English Wikipedia articles and Korean Wikipedia articles (KorNLI needs Korean pieces)."""
    english = sorted((DATA / "pretrain-wikipedia-sample").glob("wiki_*.txt"))
    korean = sorted((DATA / "ko-wikipedia" / "AA").glob("wiki_*"))[:3]
    return ",".join(str(p) for p in [*english, *korean])


@dataclasses.dataclass
class Pretrained:
    """A finished pretraining arm: its workdir, steps and per-step cost."""

    arm: str
    workdir: pathlib.Path
    steps: int
    flops_per_step: float
    seconds: float

    def model(self, step: int) -> pathlib.Path:
        """The model directory at `step`: the final one, or one written from that checkpoint."""
        if step == self.steps:
            return self.workdir / "model"
        out = self.workdir / f"model-step{step}"
        if not out.is_dir():
            from bertjax.interop import model_dir
            from bertjax.training.checkpoints import latest_params

            params = latest_params(self.workdir / "checkpoints", step)
            cfg = model_dir.read_model_config(self.workdir)
            vocab = model_dir.vocab_file(self.workdir)
            options = model_dir.tokenizer_options(self.workdir) or None
            model_dir.save_model(out, params, cfg, vocab, options)
        return out


def prepare_shared(args, root: pathlib.Path) -> dict:
    """One WordPiece vocabulary and one set of NSP-pair instances for the WordPiece arms."""
    from bertjax.data.tokenizer import read_vocab
    from bertjax.training.pretrain import prepare_data

    config = base_config(args, "bert")
    config.data.corpus = args.corpus
    data_dir, vocab = prepare_data(config, root / "wordpiece")
    return {"data_dir": data_dir, "vocab": vocab, "vocab_size": len(read_vocab(vocab))}


def base_config(args, arm: str):
    """The arm's family config with the experiment's shared data, batch and optimizer."""
    from bertjax.config import load_config
    from configs.rnn import model as rnn

    config = load_config(REPO / PRETRAINING[arm], [])
    if arm == "lstm_mlm":
        config = rnn.use_rnn(config)
    if arm == "electra":  # the discriminator has BERT-mini's shape
        config.model.update(num_layers=4, num_heads=4, hidden_size=256, intermediate_size=1024)
    config.model.vocab_size = args.vocab_size
    config.data.update(
        max_seq_len=args.seq,
        max_predictions=max(1, round(0.15 * args.seq)),
        eval_fraction=0.03,
        lowercase=True,
    )
    shared_pretraining(config, args)
    return config


def shared_pretraining(config, args) -> None:
    """Every arm's batch, logging and seed, and one optimizer for all: Adam as BERT's, with the
    experiment's peak rate and 10 % warmup (this experiment's and korean_comparison.py's)."""
    config.train.update(
        global_batch_size=args.batch,
        num_epochs=0.0,
        log_every=args.log_every,
        eval_every=0,
        eval_batches=args.eval_batches,
        seed=args.pretrain_seed,
    )
    config.optim.update(
        learning_rate=args.pretrain_lr,
        b1=0.9,
        b2=0.999,
        eps=1e-6,
        weight_decay=0.01,
        warmup_steps=0,
        warmup_fraction=0.1,
    )


def flops_per_step(config) -> float:
    """Model FLOPs of one training step: the objective's per sequence x the batch."""
    from bertjax.models import model_config
    from bertjax.objectives import make_objective

    family, cfg = model_config(config.model)
    objective = make_objective(config, config.data.vocab)
    per_sequence = objective.flops_per_sequence(family, cfg, config.data.max_seq_len)
    return per_sequence * config.train.global_batch_size


def pretrain_arm(args, arm: str, shared: dict, root: pathlib.Path, bert_flops: float) -> Pretrained:
    """Pretrains `arm` (unless its workdir has a model already) for BERT's tokens or FLOPs."""
    from bertjax.interop import model_dir

    config = base_config(args, arm)
    if arm == "gpt":  # its own byte-level BPE, trained on the same corpus
        config.data.corpus = args.corpus
        config.model.eos_token_id = 0  # where the BPE trained here puts <|endoftext|>
    else:
        config.data.dir, config.data.vocab = str(shared["data_dir"]), str(shared["vocab"])
        config.model.vocab_size = shared["vocab_size"]
    steps = args.steps
    if arm == "electra":  # the same compute as BERT, not the same steps
        steps = round(bert_flops / flops_per_step(config) / args.points) * args.points
    config.train.num_steps = steps
    config.checkpoint.update(every_steps=steps // args.points, keep=args.points)
    workdir = root / "pretrain" / arm
    seconds = pretrain_once(config, workdir)
    cfg = model_dir.read_model_config(workdir / "model")  # the trained vocabulary's real size
    config.model.vocab_size = cfg.vocab_size
    if "eos_token_id" in config.model:
        config.model.eos_token_id = cfg.eos_token_id
    config.data.vocab = str(model_dir.vocab_file(workdir / "model"))
    return Pretrained(arm, workdir, steps, flops_per_step(config), seconds)


def pretrain_once(config, workdir: pathlib.Path) -> float:
    """Pretrains `config` in `workdir` unless it finished there already; returns the seconds the
    pretraining took (kept in `pretrain_seconds.json`)."""
    from bertjax.training.pretrain import pretrain

    timing = workdir / "pretrain_seconds.json"
    if not (workdir / "final_metrics.json").is_file():
        print(f"== pretrain {workdir.name}: {config.train.num_steps} steps", flush=True)
        started = time.perf_counter()
        pretrain(config, workdir)
        timing.write_text(json.dumps(time.perf_counter() - started))
    return json.loads(timing.read_text())


def finetune_config(args, arm: str, task: str, seed: int, init: pathlib.Path | None, shared):
    """The task's config with the experiment's rows, length, epochs, seed and rate."""
    from bertjax.config import load_config
    from configs.rnn import model as rnn

    path, _, eval_rows = TASKS[task]
    config = load_config(REPO / path, [])
    if init is None:  # the recurrent encoder from random weights, on the shared vocabulary
        config = rnn.use_rnn(config)
        config.data.vocab, config.data.lowercase = str(shared["vocab"]), True
    else:
        config.init_from = str(init)
    config.task.update(
        max_train_examples=args.train_rows,
        max_eval_examples=eval_rows,
        max_len=args.ft_pair_len if config.task.get("text_b") else args.ft_len,
    )
    config.optim.learning_rate = args.ft_lr_rnn if arm in RNN_ARMS else args.ft_lr
    config.train.update(num_epochs=args.ft_epochs, seed=seed, log_every=1000)
    config.checkpoint.update(every_steps=10**9, keep=1)
    return config


def run_finetune(args, arm, task, seed, init, shared, workdir: pathlib.Path) -> dict:
    from bertjax.training.finetune import finetune

    config = finetune_config(args, arm, task, seed, init, shared)
    started = time.perf_counter()
    metrics = finetune(config, workdir)
    return {"metrics": metrics, "seconds": time.perf_counter() - started}


LOSS_KEYS = {"bert": "mlm_loss", "gpt": "lm_loss", "electra": "mlm_loss", "lstm_mlm": "mlm_loss"}


def read_results(path: pathlib.Path) -> dict[tuple, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["arm"], r["task"], r["seed"], r["step"]): r for r in rows}


def plan(args, pretrained: dict[str, Pretrained]) -> list[tuple[str, str, int, int]]:
    """(arm, task, seed, pretraining step) of every fine-tuning run: the first seed first, and
    within a seed task by task, so a stopped run leaves whole comparisons."""
    arms = args.arms.split(",")
    tasks = [t for t in TASKS if t in args.tasks.split(",")]
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for task in tasks:
            for arm in (a for a in arms if task in MATRIX[a]):
                if arm in pretrained:
                    steps = pretrained[arm].steps
                    budgets = arm in BUDGET_ARMS and task in args.budget_tasks.split(",")
                    points = range(1, args.points + 1) if budgets else [args.points]
                    if seed != int(args.seeds.split(",")[0]):
                        points = [args.points]  # the other seeds at the full budget only
                    runs += [(arm, task, seed, steps * k // args.points) for k in points]
                else:
                    runs.append((arm, task, seed, 0))
    return runs


def add_shared_args(parser: argparse.ArgumentParser, arms, tasks) -> None:
    """The folder, arms, tasks, seeds and the pretraining and fine-tuning settings of both
    experiments (this one and korean_comparison.py): BERT-mini-sized runs that fit a CPU."""
    parser.add_argument("--out", required=True, help="experiment folder (reruns resume)")
    parser.add_argument("--arms", default=",".join(arms))
    parser.add_argument("--tasks", default=",".join(tasks))
    parser.add_argument("--seeds", default="0,1", help="fine-tuning seeds")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=240, help="BERT's pretraining steps")
    parser.add_argument("--pretrain_lr", type=float, default=5e-4)
    parser.add_argument("--pretrain_seed", type=int, default=0)
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--eval_batches", type=int, default=8)
    parser.add_argument("--train_rows", type=int, default=2000, help="fine-tuning examples")
    parser.add_argument("--ft_epochs", type=float, default=3.0)
    parser.add_argument("--ft_lr", type=float, default=3e-4, help="Transformer families")


def start(args) -> pathlib.Path:
    """Makes the experiment folder, writes args.json and turns on the persistent compile cache
    (every run of a shape after the first, e.g. the other seeds, reuses its executables)."""
    root = pathlib.Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    import jax

    jax.config.update("jax_compilation_cache_dir", str(root / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    (root / "args.json").write_text(json.dumps(vars(args), indent=2) + "\n")
    return root


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shared_args(parser, ARMS, TASKS)
    parser.add_argument("--corpus", default="", help="files, comma-separated (default: see doc)")
    parser.add_argument("--points", type=int, default=2, help="budgets: steps x k/points")
    parser.add_argument("--budget_tasks", default="sst2", help="tasks fine-tuned at each budget")
    parser.add_argument("--ft_len", type=int, default=64, help="single-text max_len")
    parser.add_argument("--ft_pair_len", type=int, default=96, help="sentence-pair max_len")
    parser.add_argument("--ft_lr_rnn", type=float, default=1e-3, help="recurrent arms")
    parser.add_argument("--report_only", action="store_true", help="table and plots only")
    args = parser.parse_args(argv)
    args.corpus = args.corpus or default_corpus()
    root = start(args)

    shared = prepare_shared(args, root)
    bert = base_config(args, "bert")
    bert.data.vocab = str(shared["vocab"])
    bert.model.vocab_size = shared["vocab_size"]
    bert_flops = args.steps * flops_per_step(bert)
    pretrained = {}
    for arm in (a for a in PRETRAINING if a in args.arms.split(",")):
        if args.report_only and not (root / "pretrain" / arm / "final_metrics.json").is_file():
            continue
        pretrained[arm] = pretrain_arm(args, arm, shared, root, bert_flops)
    done = finetune_all(
        args, root, [] if args.report_only else plan(args, pretrained), shared, pretrained
    )
    report(args, root, pretrained, done)


def finetune_all(args, root: pathlib.Path, runs, shared: dict, pretrained: dict) -> dict:
    """Writes OUT/pretrained.json, then fine-tunes each (arm, task, seed, pretraining step) of
    `runs` not in OUT/results.jsonl yet, from that arm's model at that step (from random weights
    for an arm not in `pretrained`), appending its row as it finishes (a stopped experiment
    resumes). Returns every finished run's row by (arm, task, seed, step)."""
    summary = {
        a: {**dataclasses.asdict(p), "workdir": str(p.workdir)} for a, p in pretrained.items()
    }
    (root / "pretrained.json").write_text(json.dumps(summary, indent=2) + "\n")
    results_path = root / "results.jsonl"
    done = read_results(results_path)
    for arm, task, seed, step in runs:
        if (arm, task, seed, step) in done:
            continue
        print(f"== finetune {arm} step {step} on {task}, seed {seed}", flush=True)
        init = pretrained[arm].model(step) if arm in pretrained else None
        workdir = root / "finetune" / f"{arm}-{step}-{task}-{seed}"
        result = run_finetune(args, arm, task, seed, init, shared, workdir)
        flops = pretrained[arm].flops_per_step * step if arm in pretrained else 0.0
        row = {"arm": arm, "task": task, "seed": seed, "step": step, "flops": flops, **result}
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[(arm, task, seed, step)] = row
    return done


def report(args, root: pathlib.Path, pretrained: dict[str, Pretrained], done: dict) -> None:
    """Writes table.md and the two plots from the finished runs."""
    lines = [
        "| arm | steps | tokens | pretraining TFLOP | held-out loss | minutes |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for arm, p in pretrained.items():
        final = json.loads((p.workdir / "final_metrics.json").read_text())
        key = f"eval_{LOSS_KEYS[arm]}"
        extra = f", RTD acc {final['eval_rtd_accuracy']:.3f}" if arm == "electra" else ""
        lines.append(
            f"| {arm} | {p.steps} | {p.steps * args.batch * args.seq:,} | "
            f"{p.steps * p.flops_per_step / 1e12:.1f} | {LOSS_KEYS[arm]} {final[key]:.3f}{extra} | "
            f"{p.seconds / 60:.1f} |"
        )
    tasks = [t for t in TASKS if t in args.tasks.split(",")]
    full = {a: p.steps for a, p in pretrained.items()}
    lines += ["", "| arm | " + " | ".join(f"{t} ({TASKS[t][1]})" for t in tasks) + " |"]
    lines.append("|---|" + "---:|" * len(tasks))
    for arm in (a for a in ARMS if a in args.arms.split(",")):
        cells = []
        for task in tasks:
            scores = [
                100 * r["metrics"][TASKS[task][1]]
                for (a, t, _, step), r in sorted(done.items())
                if a == arm and t == task and step == full.get(arm, 0)
            ]
            cells.append(mean_sd(scores))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    (root / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot_losses(args, root, pretrained)
    _plot_budgets(root, pretrained, done, tasks)


def mean_sd(scores: list[float]) -> str:
    if not scores:
        return "-"
    if len(scores) == 1:
        return f"{scores[0]:.1f} (1 seed)"
    return f"{statistics.mean(scores):.1f} ± {statistics.stdev(scores):.1f} ({len(scores)} seeds)"


def save_figure(fig, path: pathlib.Path) -> None:
    """Lays `fig` out, writes it to `path` (120 dpi) and closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_losses(args, root: pathlib.Path, pretrained: dict[str, Pretrained]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, p in pretrained.items():
        rows = [json.loads(x) for x in (p.workdir / "metrics.jsonl").read_text().splitlines()]
        key = LOSS_KEYS[arm]
        points = [(r["step"] * args.batch * args.seq, r[key]) for r in rows if key in r]
        label = f"{arm} ({'generator ' if arm == 'electra' else ''}{key})"
        ax.plot(*zip(*points, strict=True), label=label)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("training loss (nats per predicted token)")
    ax.set_title("Pretraining on the same corpus (each family's own LM loss)")
    ax.legend()
    save_figure(fig, root / "loss_vs_tokens.png")


def _plot_budgets(root, pretrained, done, tasks) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in BUDGET_ARMS if a in pretrained]
    tasks = [t for t in tasks if any(k[0] in arms and k[1] == t for k in done)]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for arm in arms:
            by_step: dict[int, list] = {}
            for (a, t, _, step), r in done.items():
                if a == arm and t == task:
                    by_step.setdefault(step, []).append(
                        (r["flops"], 100 * r["metrics"][TASKS[task][1]])
                    )
            points = sorted(
                (v[0][0] / 1e12, statistics.mean(s for _, s in v)) for v in by_step.values()
            )
            ax.plot(*zip(*points, strict=True), marker="o", label=arm)
        ax.set_title(f"{task} ({TASKS[task][1]})")
        ax.set_xlabel("pretraining TFLOP")
        ax.legend()
    save_figure(fig, root / "score_vs_flops.png")


if __name__ == "__main__":
    main()
