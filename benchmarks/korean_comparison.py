"""Korean pretraining choices measured: pre-tokenizer (whitespace vs morphemes), entity markers.

Issue 16's two comparisons. Every arm pretrains BERT-mini (configs/mini.py, L4/H256/A4) the same
way on the same Korean Wikipedia files, with a cased WordPiece vocabulary of its own (Hangul
syllables kept whole), and is fine-tuned with the same settings:

  whitespace  words split at whitespace and punctuation, then WordPiece (KoELECTRA's way)
  morpheme    words split into MeCab-ko morphemes first (`data.pretokenizer="morpheme"`, KLUE-BERT)
  entities    `whitespace` plus entity-aware BERT: `[ENT]`/`[/ENT]` around gazetteer names in
              pretraining and fine-tuning text, and the entity embedding (`entity_vocab_size=2`)

The gazetteer is the document titles of all of `ko-wikipedia` (WikiExtractor `title=`, names of
two characters or more; `OUT/titles.txt`), matched longest first. The pre-tokenizer arms run
KLUE-NER, KorNLI and KorSTS; `entities` runs the sentence tasks (KorNLI, KorSTS), where the
same gazetteer marks the fine-tuning text. Each fine-tuning run is one (arm, task, seed) in
`OUT/results.jsonl` (a rerun skips runs already there); the table goes to `OUT/table.md`:

  python benchmarks/korean_comparison.py --out /tmp/korean
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("BERTJAX_DATA", REPO.parent / "shared" / "data"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import family_comparison  # noqa: E402  (the experiments' shared settings)

ARMS = {  # name: (pretokenizer, entity-aware)
    "whitespace": ("whitespace", False),
    "morpheme": ("morpheme", False),
    "entities": ("whitespace", True),
}
TASKS = {  # name: (config, metrics reported, eval rows kept, max_len)
    "klue_ner": ("configs/ko/klue_ner.py", ("entity_macro_f1", "char_macro_f1"), 0, 128),
    "kornli": ("configs/ko/kornli.py", ("accuracy",), 2000, 96),
    "korsts": ("configs/ko/korsts.py", ("pearson",), 0, 96),
}
MATRIX = {"whitespace": tuple(TASKS), "morpheme": tuple(TASKS), "entities": ("kornli", "korsts")}


def default_corpus() -> str:
    return ",".join(str(p) for p in sorted((DATA / "ko-wikipedia" / "AA").glob("wiki_*"))[:4])


def write_gazetteer(out: pathlib.Path) -> dict:
    """All ko-wikipedia titles of two characters or more, one a line."""
    from bertjax.data.entities import read_gazetteer

    names = set()
    for path in sorted((DATA / "ko-wikipedia").glob("*/wiki_*")):
        names.update(read_gazetteer(path))
    kept = sorted(n for n in names if len(n) >= 2)
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return {"titles": len(names), "kept": len(kept)}


def pretrain_config(args, arm: str, gazetteer: pathlib.Path):
    from bertjax.config import load_config

    pretokenizer, entity_aware = ARMS[arm]
    config = load_config(REPO / "configs" / "mini.py", [])
    config.model.vocab_size = args.vocab_size
    config.data.update(
        corpus=args.corpus,
        pretokenizer=pretokenizer,
        lowercase=False,
        max_seq_len=args.seq,
        max_predictions=max(1, round(0.15 * args.seq)),
        eval_fraction=0.03,
    )
    if entity_aware:
        config.model.entity_vocab_size = 2
        config.data.entities = f"gazetteer:{gazetteer}"
    family_comparison.shared_pretraining(config, args)
    config.train.num_steps = args.steps
    config.checkpoint.update(every_steps=args.steps, keep=1)
    return config


def pretrain_arm(args, arm: str, root: pathlib.Path, gazetteer: pathlib.Path) -> dict:
    """Pretrains `arm` unless its workdir has finished; returns its summary."""
    from bertjax.data.shards import load_metadata
    from bertjax.training.pretrain import pretrain

    workdir = root / "pretrain" / arm
    timing = workdir / "pretrain_seconds.json"
    if not (workdir / "final_metrics.json").is_file():
        print(f"== pretrain {arm}: {args.steps} steps", flush=True)
        started = time.perf_counter()
        pretrain(pretrain_config(args, arm, gazetteer), workdir)
        timing.write_text(json.dumps(time.perf_counter() - started))
    final = json.loads((workdir / "final_metrics.json").read_text())
    metadata = load_metadata(workdir / "data")
    train = metadata["splits"]["train"]
    return {
        "arm": arm,
        "seconds": json.loads(timing.read_text()),
        "eval_mlm_loss": final["eval_mlm_loss"],
        "eval_mlm_accuracy": final["eval_mlm_accuracy"],
        "train_instances": train["num_examples"],
        "train_tokens": train["num_tokens"],
        "entity_spans": metadata["statistics"].get("entity_spans", 0),
    }


def finetune_config(args, arm: str, task: str, seed: int, root: pathlib.Path, gazetteer):
    from bertjax.config import load_config

    path, _, eval_rows, max_len = TASKS[task]
    config = load_config(REPO / path, [])
    config.init_from = str(root / "pretrain" / arm / "model")
    if ARMS[arm][1]:
        config.task.entities = f"gazetteer:{gazetteer}"
    config.task.update(max_train_examples=args.train_rows, max_eval_examples=eval_rows)
    config.task.max_len = max_len
    config.optim.learning_rate = args.ft_lr
    config.train.update(num_epochs=args.ft_epochs, seed=seed, log_every=1000)
    config.checkpoint.update(every_steps=10**9, keep=1)
    return config


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    family_comparison.add_shared_args(parser, ARMS, TASKS)
    parser.add_argument("--corpus", default="", help="files, comma-separated (default: wiki_00-03)")
    parser.add_argument("--report_only", action="store_true", help="table only")
    args = parser.parse_args(argv)
    args.corpus = args.corpus or default_corpus()
    root = family_comparison.start(args)
    gazetteer = root / "titles.txt"
    names = write_gazetteer(gazetteer)
    arms = [a for a in ARMS if a in args.arms.split(",")]
    pretrained = {}
    for arm in arms:
        if args.report_only and not (root / "pretrain" / arm / "final_metrics.json").is_file():
            continue
        pretrained[arm] = pretrain_arm(args, arm, root, gazetteer)
    (root / "pretrained.json").write_text(json.dumps(pretrained, indent=2) + "\n")

    from bertjax.training.finetune import finetune

    results_path = root / "results.jsonl"
    done = {}
    if results_path.is_file():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[(row["arm"], row["task"], row["seed"])] = row
    tasks = [t for t in TASKS if t in args.tasks.split(",")]
    for seed in [] if args.report_only else [int(s) for s in args.seeds.split(",")]:
        for task in tasks:
            for arm in (a for a in pretrained if task in MATRIX[a]):
                if (arm, task, seed) in done:
                    continue
                print(f"== finetune {arm} on {task}, seed {seed}", flush=True)
                config = finetune_config(args, arm, task, seed, root, gazetteer)
                started = time.perf_counter()
                metrics = finetune(config, root / "finetune" / f"{arm}-{task}-{seed}")
                row = {"arm": arm, "task": task, "seed": seed, "metrics": metrics}
                row["seconds"] = time.perf_counter() - started
                with results_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done[(arm, task, seed)] = row
    report(root, pretrained, done, tasks, names)


def report(root, pretrained: dict, done: dict, tasks: list[str], names: dict) -> None:
    lines = [
        f"Gazetteer: {names['kept']:,} of {names['titles']:,} ko-wikipedia titles.",
        "",
        "| arm | train instances | entity spans | held-out MLM loss | MLM accuracy | minutes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm, p in pretrained.items():
        lines.append(
            f"| {arm} | {p['train_instances']:,} | {p['entity_spans']:,} | "
            f"{p['eval_mlm_loss']:.3f} | {p['eval_mlm_accuracy']:.3f} | {p['seconds'] / 60:.1f} |"
        )
    columns = [(t, m) for t in tasks for m in TASKS[t][1]]
    lines += ["", "| arm | " + " | ".join(f"{t} {m}" for t, m in columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    for arm in pretrained:
        cells = []
        for task, metric in columns:
            scores = [
                100 * r["metrics"][metric]
                for (a, t, _), r in sorted(done.items())
                if a == arm and t == task
            ]
            cells.append(family_comparison.mean_sd(scores))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    (root / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
