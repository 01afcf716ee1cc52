"""Experiment 1 of issue 22, the bottleneck: the recurrent encoder-decoder without attention
against the same model with additive attention, the same tokens seen, on the ko-en dev pairs.

Each (attention, seed) arm is a `bertjax pretrain` of configs/seq2seq/ko_en_rnn.py with the
sizes below; rerunning the same command resumes unfinished arms (and `--steps` larger than
before extends them). Then every arm's model translates the first `--dev` dev pairs greedily:
BLEU and chrF overall and by source length (tokens, `BUCKETS`). Writes OUT/results.json and
OUT/bleu_vs_tokens.png (dev BLEU of each evaluation against the training target tokens).

    python benchmarks/seq2seq_experiments.py --out /tmp/s2s-exp --steps 400 --seeds 0
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
ARMS = ("none", "additive")
BUCKETS = ((1, 10), (11, 15), (16, 20), (21, 10_000))  # source tokens, </s> included


def overrides(attention: str, seed: int, steps: int, eval_every: int) -> list[str]:
    return [
        f"--config.model.attention={attention}",
        f"--config.train.seed={seed}",
        f"--config.train.num_steps={steps}",
        f"--config.train.eval_every={eval_every}",
        f"--config.checkpoint.every_steps={eval_every}",
        "--config.seq2seq.eval_translations=200",
    ]


def evaluate_arm(workdir: pathlib.Path, n: int) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dev", type=int, default=400, help="dev pairs translated at the end")
    args = parser.parse_args()
    config_path = REPO / "configs" / "seq2seq" / "ko_en_rnn.py"
    results = {}
    for seed in args.seeds:
        for attention in ARMS:
            name = f"{attention}-seed{seed}"
            workdir = args.out / name
            config = load_config(
                config_path, overrides(attention, seed, args.steps, args.eval_every)
            )
            pretrain(config, workdir)
            batch = config.train.global_batch_size
            results[name] = {"dev": evaluate_arm(workdir, args.dev), "curve": curve(workdir, batch)}
            print(name, json.dumps(results[name]["dev"]["all"]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "bleu_vs_tokens.png")


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        tokens, bleu = zip(*result["curve"], strict=True) if result["curve"] else ((), ())
        ax.plot(tokens, bleu, marker="o", label=name)
    ax.set_xlabel("training target tokens")
    ax.set_ylabel("dev BLEU (greedy, 200 pairs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
