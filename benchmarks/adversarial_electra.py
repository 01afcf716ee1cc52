"""Maximum-likelihood against adversarial ELECTRA: one corpus, equal compute, the same fine-tuning.

Two pretraining arms of the family comparison's ELECTRA (benchmarks/family_comparison.py: its
shared corpus, vocabulary and instances, a discriminator of BERT-mini's shape, generator 1/4, the
steps that give BERT-mini's pretraining FLOPs, the same Adam), differing in one config field:

  electra              objective "rtd": the generator trained by maximum likelihood (MLM)
  electra_adversarial  objective "rtd_adversarial": the generator rewarded for fooling the
                       discriminator (policy gradient; `--mle_weight` mixes the MLM loss back in)

`--model configs/electra/tiny.py` gives both arms another shape, which then takes the steps that
spend the same FLOPs (at the family comparison's defaults, 1,292 for the tiny shape, where the
discriminator starts detecting replaced tokens after ~100 steps; the default shape had not at 228).
Both do the same passes per step, so equal steps are equal FLOPs. Each is then fine-tuned on the
family comparison's ELECTRA tasks with its fine-tuning settings and seeds. Results go to
`OUT/results.jsonl` (a rerun skips runs already there), the table to `OUT/table.md` and the
game's dynamics (both players' losses and the generator's reward, per arm, over training) to
`OUT/game_dynamics.png`:

  python benchmarks/adversarial_electra.py --out /tmp/adv --model configs/electra/tiny.py
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import family_comparison as fc  # noqa: E402

OBJECTIVES = {"electra": "rtd", "electra_adversarial": "rtd_adversarial"}
TASKS = fc.MATRIX["electra"]
# The pretraining table's columns: (final_metrics key without "eval_", header).
PRETRAIN_COLUMNS = (
    ("mlm_accuracy", "generator MLM acc."),
    ("mlm_loss", "generator MLM loss"),
    ("generator_reward", "generator reward"),
    ("rtd_loss", "discriminator loss"),
    ("rtd_original_accuracy", "D acc. on real"),
    ("rtd_recall", "D acc. on replaced"),
    ("replaced_share", "replaced share"),
)

# The fields `--model` takes from its config: the shape of both networks.
SHAPE_FIELDS = (
    "embedding_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "generator_fraction",
)


def arm_config(args, arm: str, shared: dict):
    """The family comparison's ELECTRA config on the shared data, with the arm's objective."""
    config = fc.base_config(args, "electra")
    if args.model:  # another ELECTRA shape: its model fields, the shared data's vocabulary
        from bertjax.config import load_config

        model = load_config(REPO / args.model, []).model
        config.model.update({k: model[k] for k in SHAPE_FIELDS})
    config.objective = OBJECTIVES[arm]
    config.rtd.mle_weight = args.mle_weight
    config.data.dir, config.data.vocab = str(shared["data_dir"]), str(shared["vocab"])
    config.model.vocab_size = shared["vocab_size"]
    return config


def pretrain_arm(args, arm: str, shared: dict, root: pathlib.Path, steps: int) -> fc.Pretrained:
    """Pretrains `arm` for `steps` (unless its workdir has a model already)."""
    config = arm_config(args, arm, shared)
    config.train.num_steps = steps
    config.checkpoint.update(every_steps=max(1, steps // 4), keep=1)  # a stopped run resumes
    workdir = root / "pretrain" / arm
    seconds = fc.pretrain_once(config, workdir)
    return fc.Pretrained(arm, workdir, steps, fc.flops_per_step(config), seconds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fc.add_shared_args(parser, OBJECTIVES, TASKS)
    parser.add_argument("--corpus", default="", help="files, comma-separated (default: see doc)")
    parser.add_argument(
        "--model", default="", help="an ELECTRA config whose shape both arms take (default: above)"
    )
    parser.add_argument("--mle_weight", type=float, default=0.0, help="adversarial arm's MLM")
    parser.add_argument("--ft_len", type=int, default=64, help="single-text max_len")
    parser.add_argument("--ft_pair_len", type=int, default=96, help="sentence-pair max_len")
    parser.add_argument("--report_only", action="store_true", help="table and plot only")
    args = parser.parse_args(argv)
    args.corpus = args.corpus or fc.default_corpus()
    root = fc.start(args)

    shared = fc.prepare_shared(args, root)
    bert = fc.base_config(args, "bert")
    bert.data.vocab, bert.model.vocab_size = str(shared["vocab"]), shared["vocab_size"]
    # BERT-mini's pretraining FLOPs, as the family comparison's ELECTRA arm; both arms do the
    # same passes per step, so the same steps.
    steps = round(
        args.steps
        * fc.flops_per_step(bert)
        / fc.flops_per_step(arm_config(args, "electra", shared))
    )
    arms = [a for a in OBJECTIVES if a in args.arms.split(",")]
    if args.report_only:  # the arms whose pretraining finished
        arms = [a for a in arms if (root / "pretrain" / a / "final_metrics.json").is_file()]
    pretrained = {a: pretrain_arm(args, a, shared, root, steps) for a in arms}
    runs = [
        (arm, task, int(seed), steps)
        for seed in args.seeds.split(",")
        for task in (t for t in TASKS if t in args.tasks.split(","))
        for arm in arms
    ]
    done = fc.finetune_all(args, root, [] if args.report_only else runs, shared, pretrained)
    report(args, root, pretrained, done)


def report(args, root: pathlib.Path, pretrained: dict, done: dict) -> None:
    """Writes table.md (pretraining, then fine-tuning) and game_dynamics.png."""
    lines = [
        "| arm | steps | TFLOP | minutes | " + " | ".join(h for _, h in PRETRAIN_COLUMNS) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(PRETRAIN_COLUMNS),
    ]
    for arm, p in pretrained.items():
        final = json.loads((p.workdir / "final_metrics.json").read_text())
        cells = [f"{final[f'eval_{key}']:.3f}" for key, _ in PRETRAIN_COLUMNS]
        lines.append(
            f"| {arm} | {p.steps} | {p.steps * p.flops_per_step / 1e12:.1f} | "
            f"{p.seconds / 60:.1f} | " + " | ".join(cells) + " |"
        )
    tasks = [t for t in TASKS if t in args.tasks.split(",")]
    header = " | ".join(f"{t} ({fc.TASKS[t][1]}, per seed)" for t in tasks)
    lines += ["", f"| arm | {header} |"]
    lines.append("|---|" + "---:|" * len(tasks))
    for arm in pretrained:
        cells = []
        for task in tasks:
            scores = [
                100 * r["metrics"][fc.TASKS[task][1]]
                for (a, t, _, _), r in sorted(done.items())
                if a == arm and t == task
            ]
            cells.append(per_seed(scores))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    (root / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_game(root, pretrained)


def per_seed(scores: list[float]) -> str:
    """'s0 / s1 (mean m)': every seed's score, in seed order, and their mean."""
    if len(scores) < 2:
        return fc.mean_sd(scores)
    return " / ".join(f"{s:.1f}" for s in scores) + f" (mean {statistics.mean(scores):.1f})"


def plot_game(root: pathlib.Path, pretrained: dict) -> None:
    """Per arm, against steps (training metrics of each logging window): the generator's loss
    (its side of the game), its reward (the discriminator's loss on its samples) and masked-LM
    accuracy; the discriminator's loss and its accuracy on real and on replaced tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (  # the generator's side on top, the discriminator's below
        ("generator_loss", "generator loss (own objective)"),
        ("generator_reward", "generator reward = D's loss on its samples"),
        ("mlm_accuracy", "generator masked-LM accuracy"),
        ("rtd_loss", "discriminator loss (all tokens)"),
        ("rtd_original_accuracy", "D accuracy on real tokens"),
        ("rtd_recall", "D accuracy on replaced tokens"),
    )
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, title) in zip(axes.flat, keys, strict=True):
        for arm, p in pretrained.items():
            rows = [json.loads(x) for x in (p.workdir / "metrics.jsonl").read_text().splitlines()]
            points = [(r["step"], r[key]) for r in rows if key in r and "eval_loss" not in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=arm)
        ax.set_title(title)
        ax.set_xlabel("pretraining step")
        ax.legend()
    fc.save_figure(fig, root / "game_dynamics.png")


if __name__ == "__main__":
    main()
