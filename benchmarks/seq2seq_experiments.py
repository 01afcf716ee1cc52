"""Experiments 1 and 2 of issue 22 on the ko-en dev pairs, and the helpers other experiments
import (`train_arm`, `evaluate_by_length`, `curve`, `run_arm`, `flops_per_step`, `table`, `plot`).

`--experiment bottleneck` (1): the recurrent encoder-decoder without attention against the same
model with additive attention, the same tokens seen. `--experiment attention` (2): the
Transformer encoder-decoder against the recurrent model with additive attention.

Each (arm, seed) is a `bertjax pretrain` of its config with the overrides of its arm; rerunning
the same command resumes unfinished arms (and `--steps` larger than before extends them). Then
every arm's model translates the first `--dev` dev pairs greedily: BLEU and chrF overall and by
source length (tokens, `BUCKETS`). Writes OUT/results.json (all arms of OUT) and
OUT/bleu_vs_tokens-EXPERIMENT.png (dev BLEU of each evaluation against the training target tokens).

    python benchmarks/seq2seq_experiments.py --out /tmp/s2s-exp --steps 400 --seeds 0 1 2
    python benchmarks/seq2seq_experiments.py --out /tmp/s2s-exp --experiment attention --seeds 0

`--steps` is a multiple of `--eval-every`; with the same OUT the "additive" arm of both
experiments is the same run.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from bertjax.config import load_config
from bertjax.data.source import PretrainingSource
from bertjax.inference.translate import translate
from bertjax.objectives.seq2seq_eval import eval_pairs, scores
from bertjax.training.pretrain import pretrain

REPO = pathlib.Path(__file__).resolve().parents[1]
RNN = REPO / "configs" / "seq2seq" / "ko_en_rnn.py"
TRANSFORMER = REPO / "configs" / "seq2seq" / "ko_en_transformer.py"
BUCKETS = ((1, 10), (11, 15), (16, 20), (21, 10_000))  # source tokens, </s> included
# experiment -> arm name -> (config, overrides); workdirs are OUT/{arm}-seed{seed}
EXPERIMENTS = {
    "bottleneck": {
        "none": (RNN, ["--config.model.attention=none"]),
        "additive": (RNN, ["--config.model.attention=additive"]),
    },
    # the RNN's vocabulary (2,000), batch (32) and warmup (100 steps) for the Transformer too;
    # "additive-eqflops": the RNN with the steps whose training FLOPs equal the Transformer's
    "attention": {
        "additive": (RNN, ["--config.model.attention=additive"]),
        "transformer": (
            TRANSFORMER,
            [
                "--config.model.vocab_size=2000",
                "--config.train.global_batch_size=32",
                "--config.optim.warmup_steps=100",
            ],
        ),
        "additive-eqflops": (RNN, ["--config.model.attention=additive"]),
    },
}


def flops_per_step(config_path: pathlib.Path, extra: list[str]) -> float:
    """Analytic training FLOPs of one step (`objective.flops_per_sequence` of the Seq2Seq
    objective at `data.max_seq_len`, times the global batch), as the trainer counts them."""
    from bertjax.models.registry import model_config
    from bertjax.objectives.seq2seq import Seq2Seq

    config = load_config(config_path, extra)
    family, cfg = model_config(config.model)
    per_pair = Seq2Seq(0.0, 0, 64, "").flops_per_sequence(family, cfg, config.data.max_seq_len)
    return per_pair * config.train.global_batch_size


def train_arm(
    config_path: pathlib.Path,
    workdir: pathlib.Path,
    extra: list[str],
    seed: int,
    steps: int,
    eval_every: int = 100,
    eval_translations: int = 200,
):
    """Trains (or resumes, or extends) one arm: `bertjax pretrain` of `config_path` with the
    `extra` overrides, the seed and steps, dev loss and BLEU/chrF of `eval_translations` greedy
    dev translations every `eval_every` steps (in WORKDIR/metrics.jsonl). Returns the config."""
    config = load_config(
        config_path,
        [
            *extra,
            f"--config.train.seed={seed}",
            f"--config.train.num_steps={steps}",
            f"--config.train.eval_every={eval_every}",
            f"--config.checkpoint.every_steps={eval_every}",
            f"--config.seq2seq.eval_translations={eval_translations}",
        ],
    )
    pretrain(config, workdir)
    return config


def evaluate_by_length(workdir: pathlib.Path, n: int) -> dict:
    """BLEU/chrF of greedy translations of the first n dev pairs, overall and by bucket."""
    source = PretrainingSource(workdir / "data", "eval")
    src_ids, _ = eval_pairs(source, n)
    lines = (workdir / "corpus" / "korsts-ko-en" / "dev.tsv").read_text(encoding="utf-8")
    pairs = [line.split("\t") for line in lines.splitlines()[1 : n + 1]]
    results = translate(workdir / "model", [ko for ko, _ in pairs], max_len=64)
    hyps = [r["translation"] for r in results]
    refs = [en for _, en in pairs]
    out = {"all": {**scores(hyps, refs), "pairs": len(refs)}}
    lengths = np.array([len(ids) for ids in src_ids])
    for low, high in BUCKETS:
        keep = [i for i, n_tok in enumerate(lengths) if low <= n_tok <= high]
        if keep:
            picked = scores([hyps[i] for i in keep], [refs[i] for i in keep])
            out[f"{low}-{high}"] = {**picked, "pairs": len(keep)}
    return out


def curve(workdir: pathlib.Path, batch: int) -> list[tuple[float, float]]:
    """(training target tokens, dev BLEU) of each evaluation of an arm."""
    source = PretrainingSource(workdir / "data", "train")
    per_pair = float(np.mean([int((source[i]["labels"] >= 0).sum()) for i in range(500)]))
    points = []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval_bleu" in record:
            points.append((record["step"] * batch * per_pair, record["eval_bleu"]))
    return points


def run_arm(
    config_path: pathlib.Path,
    workdir: pathlib.Path,
    extra: list[str],
    seed: int,
    steps: int,
    eval_every: int = 100,
    dev: int = 400,
) -> dict:
    """`train_arm`, then {"dev": `evaluate_by_length`(dev pairs), "curve": `curve`,
    "flops_per_step": `flops_per_step`}."""
    config = train_arm(config_path, workdir, extra, seed, steps, eval_every)
    points = curve(workdir, config.train.global_batch_size)
    return {
        "dev": evaluate_by_length(workdir, dev),
        "curve": points,
        "flops_per_step": flops_per_step(config_path, extra),
        "tokens_per_step": points[-1][0] / steps,
    }


def table(results: dict) -> str:
    """A markdown table of `results` (name -> `run_arm`): BLEU / chrF overall and by bucket and
    the dev BLEU of each evaluation, one row per run and a mean (sample sd) row per arm."""
    keys = ["all", *(f"{low}-{high}" for low, high in BUCKETS)]
    rows = []
    for arm in dict.fromkeys(name.rsplit("-seed", 1)[0] for name in results):
        names = [name for name in results if name.rsplit("-seed", 1)[0] == arm]
        for name in names:
            dev, bleus = results[name]["dev"], [b for _, b in results[name]["curve"]]
            cells = [f"{dev[k]['bleu']:.2f} / {dev[k]['chrf']:.1f}" for k in keys]
            rows.append([name, *cells, " / ".join(f"{b:.2f}" for b in bleus)])
        if len(names) > 1:
            runs = [results[name] for name in names]
            cells = []
            for k in keys:
                bleu = [r["dev"][k]["bleu"] for r in runs]
                chrf = np.mean([r["dev"][k]["chrf"] for r in runs])
                cells.append(f"{np.mean(bleu):.2f} ({np.std(bleu, ddof=1):.2f}) / {chrf:.1f}")
            curves = np.mean([[b for _, b in r["curve"]] for r in runs], axis=0)
            rows.append([f"**{arm}, mean**", *cells, " / ".join(f"{b:.2f}" for b in curves)])
    pairs = results[next(iter(results))]["dev"]
    head = ["run", *(f"{k} ({pairs[k]['pairs']})" for k in keys), "dev BLEU per evaluation"]
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def plot(results: dict, path: pathlib.Path, title: str = "", flops: bool = False) -> None:
    """Dev BLEU against training target tokens (or `flops`: training FLOPs), one line per arm
    (`results`: name -> `run_arm`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    arms = sorted({name.rsplit("-seed", 1)[0] for name in results})
    styles = ("-", "--", ":", "-.")
    for index, (name, result) in enumerate(results.items()):
        arm, _, seed = name.rpartition("-seed")
        color = f"C{arms.index(arm)}" if arm else f"C{index}"
        style = styles[int(seed) % len(styles)] if seed.isdigit() else "-"
        tokens, bleu = zip(*result["curve"], strict=True) if result["curve"] else ((), ())
        if flops:
            scale = result["flops_per_step"] / result["tokens_per_step"]
            tokens = [t * scale for t in tokens]
        ax.plot(tokens, bleu, marker="o", label=name, color=color, linestyle=style)
    ax.set_xlabel("training FLOPs (analytic)" if flops else "training target tokens")
    ax.set_ylabel("dev BLEU (greedy, 200 pairs)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="bottleneck")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dev", type=int, default=400, help="dev pairs translated at the end")
    args = parser.parse_args()
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    arms = EXPERIMENTS[args.experiment]
    every = {arm: args.eval_every for arm in arms}
    if "additive-eqflops" in arms:  # evaluated at the Transformer's evaluations' FLOPs
        ratio = flops_per_step(*arms["transformer"]) / flops_per_step(*arms["additive"])
        every["additive-eqflops"] = round(args.eval_every * ratio)
        print(f"transformer / additive training FLOPs per step: {ratio:.3f}", flush=True)
    steps = {arm: every[arm] * (args.steps // args.eval_every) for arm in arms}
    for seed in args.seeds:
        for arm, (config_path, extra) in arms.items():
            name = f"{arm}-seed{seed}"
            results[name] = run_arm(
                config_path, args.out / name, extra, seed, steps[arm], every[arm], args.dev
            )
            print(name, json.dumps(results[name]["dev"]["all"]), flush=True)
            results_path.write_text(json.dumps(results, indent=2))
    mine = {
        f"{arm}-seed{seed}": results[f"{arm}-seed{seed}"] for seed in args.seeds for arm in arms
    }
    print(table(mine))
    plot(mine, args.out / f"bleu_vs_tokens-{args.experiment}.png", args.experiment)
    if args.experiment == "attention":
        plot(mine, args.out / "bleu_vs_flops-attention.png", args.experiment, flops=True)


if __name__ == "__main__":
    main()
