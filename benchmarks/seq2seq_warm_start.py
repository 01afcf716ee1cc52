"""Experiment 3 of issue 22 ("what BERT is for") on the ko-en dev pairs: the encoder of a Korean
BERT pretrained here with a fresh Transformer decoder (`configs/seq2seq/ko_en_bert2tx.py`, the
BERT2RND warm start) against the identical model with a random encoder
(`--config.encoder_init=random`: the BERT's architecture and vocabulary, the same fresh decoder).

The BERT is `configs/ko/quickstart.py` (BERT-tiny) with `BERT_OVERRIDES`: its WordPiece vocabulary
serves the Korean source and the English target, so it is trained on Korean Wikipedia plus the
English Wikipedia sample of the shared data (a Korean-only vocabulary splits English into short
pieces).

Each (arm, seed) trains with `seq2seq_experiments.run_arm` (the same steps, data and seed for both
arms; dev BLEU/chrF of greedy translations every `--eval-every` steps), then translates the first
`--dev` dev pairs greedily (overall and by source length) and the first `--beam-pairs` with `--beam`
beams. Writes OUT/results.json and OUT/bleu_vs_tokens-warm_start.png; rerunning resumes.

    python benchmarks/seq2seq_warm_start.py --out /tmp/s2sw --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from seq2seq_experiments import plot, run_arm  # noqa: E402

from bertjax.config import load_config  # noqa: E402
from bertjax.inference.translate import scores, translate  # noqa: E402
from bertjax.training.pretrain import pretrain  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
WARM = REPO / "configs" / "seq2seq" / "ko_en_bert2tx.py"
BERT_CONFIG = REPO / "configs" / "ko" / "quickstart.py"
BERT_OVERRIDES = [
    "--config.data.corpus=$BERTJAX_DATA/ko-wikipedia/AA/wiki_0[0-3],"
    "$BERTJAX_DATA/pretrain-wikipedia-sample/wiki_0[0-1].txt",
    "--config.model.vocab_size=12000",
    "--config.data.max_seq_len=64",
    "--config.train.global_batch_size=64",
    "--config.optim.warmup_steps=100",
    "--config.train.log_every=50",
    "--config.train.eval_every=500",
    "--config.checkpoint.every_steps=500",
]
# arm -> overrides of WARM (besides init_from); both build the same model
ARMS = {"bert2tx": [], "scratch": ["--config.encoder_init=random"]}
# the seq2seq runs (both arms): a short warmup for a few hundred steps, batches of 32 pairs, the
# decoder's feed-forward 4x the BERT-tiny width
SEQ2SEQ_OVERRIDES = [
    "--config.optim.warmup_steps=100",
    "--config.train.global_batch_size=32",
    "--config.model.decoder_intermediate_size=512",
]


def pretrain_bert(workdir: pathlib.Path, steps: int) -> pathlib.Path:
    """Pretrains (or resumes) the Korean BERT; returns its model directory."""
    model = workdir / "model"
    if not (model / "config.json").is_file():
        config = load_config(BERT_CONFIG, [*BERT_OVERRIDES, f"--config.train.num_steps={steps}"])
        pretrain(config, workdir)
    return model


def beam_scores(workdir: pathlib.Path, n: int, beams: int) -> dict:
    """BLEU/chrF of `beams`-beam translations of the first n dev pairs."""
    lines = (workdir / "corpus" / "korsts-ko-en" / "dev.tsv").read_text(encoding="utf-8")
    pairs = [line.split("\t") for line in lines.splitlines()[1 : n + 1]]
    results = translate(workdir / "model", [ko for ko, _ in pairs], beams=beams, max_len=64)
    hyps = [r["translation"] for r in results]
    return {**scores(hyps, [en for _, en in pairs]), "pairs": len(pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--bert-steps", type=int, default=500)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--dev", type=int, default=400, help="dev pairs translated at the end")
    parser.add_argument(
        "--beam", type=int, default=4, help="beams of the final translation (0: none)"
    )
    parser.add_argument("--beam-pairs", type=int, default=200, help="dev pairs for --beam")
    args = parser.parse_args()
    bert = pretrain_bert(args.out / "ko-bert", args.bert_steps)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for seed in args.seeds:
        for arm, extra in ARMS.items():
            name = f"{arm}-seed{seed}"
            workdir = args.out / name
            overrides = [f"--config.init_from={bert}", *SEQ2SEQ_OVERRIDES, *extra]
            result = run_arm(WARM, workdir, overrides, seed, args.steps, args.eval_every, args.dev)
            if args.beam:
                result["beam"] = beam_scores(workdir, args.beam_pairs, args.beam)
            results[name] = result
            print(
                name, json.dumps(result["dev"]["all"]), json.dumps(result.get("beam")), flush=True
            )
            results_path.write_text(json.dumps(results, indent=2))
    if results:
        plot(results, args.out / "bleu_vs_tokens-warm_start.png", "Korean BERT encoder vs scratch")


if __name__ == "__main__":
    main()
