"""Fault and bad-input probes against `bertjax pretrain` and `bertjax tokenizer` (issue 27).

Each probe runs the real CLI in a subprocess on configs/test.py (length 32, 8 steps,
checkpoints every 2), injects one fault or bad input, and when the run is resumable reruns the
same command and compares the losses with an uninterrupted run bit for bit. Prints a markdown
table: what each probe does now, its exit status, whether the rerun resumes exactly, whether
anything was lost (a loss differs, a good checkpoint or metric line vanished) and whether a
Python traceback was printed. Disk-full probes mount a small tmpfs and are skipped without root.

    python benchmarks/fault_probes.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "test.py"
RUN = ["--config.train.num_steps=8", "--config.train.log_every=1", "--config.train.eval_every=0"]
RUN += ["--config.checkpoint.every_steps=2", "--config.data.max_seq_len=32"]
RUN += ["--config.data.max_predictions=5", "--config.data.eval_fraction=0.05"]
RUN += ["--config.train.eval_batches=2"]


def env() -> dict:
    out = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    out["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    out["JAX_COMPILATION_CACHE_DIR"] = str(pathlib.Path(tempfile.gettempdir()) / "probe-jax-cache")
    out["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return out


def cli(*args, wait=True):
    cmd = [sys.executable, "-m", "bertjax.cli", *map(str, args)]
    if wait:
        return subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True)
    return subprocess.Popen(cmd, env=env(), cwd=REPO, stderr=subprocess.PIPE, text=True)


def pretrain(workdir, data, *extra, wait=True):
    return cli("pretrain", "--config", CONFIG, "--workdir", workdir, *data, *RUN, *extra, wait=wait)


def losses(workdir) -> dict:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "loss" in record:
            out[record["step"]] = record["loss"]
    return out


def wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not condition():
        time.sleep(0.05)


KEYS = ("taking over", "dropped a torn", "is unreadable", "interrupted preparation", "hold no text")
KEYS += ("held invalid UTF-8",)


def last_line(stderr: str, code: int | None = None) -> str:
    """What the run said: its `bertjax CMD:` line, else its telling warning, else how it ended."""
    lines = [line.split("\r")[-1].strip() for line in stderr.splitlines()]
    said = [line[line.index("bertjax ") :] for line in lines if "bertjax " in line]
    warned = [line for line in lines if any(k in line for k in KEYS)]
    if said:
        return said[-1][:220]
    if warned:
        return warned[-1][:220]
    if code == -signal.SIGKILL:
        return "(killed: no message)"
    return "(finished, no message)" if code == 0 else (lines[-1][:220] if lines else "")


class Probes:
    def __init__(self, root: pathlib.Path):
        self.root, self.rows = root, []
        self.data = prepare(root / "prepared")
        straight = pretrain(root / "straight", self.data)
        assert straight.returncode == 0, straight.stderr[-2000:]
        self.expected = losses(root / "straight")

    def record(self, name, first, rerun=None, workdir=None, resumable=True):
        traceback = "Traceback" in first.stderr + (rerun.stderr if rerun else "")
        exact = lost = "n/a"
        if resumable and workdir is not None:
            got = losses(workdir)
            exact = "yes" if rerun and rerun.returncode == 0 and got == self.expected else "no"
            lost = "no" if got == self.expected else "yes"
        code = (
            first.returncode if rerun is None else f"{first.returncode}, rerun {rerun.returncode}"
        )
        what = last_line(first.stderr, first.returncode)
        if rerun is not None and rerun is not first:
            what += "; rerun: " + last_line(rerun.stderr, rerun.returncode)
        self.rows.append((name, what, code, exact, lost, traceback))
        print(self.rows[-1], flush=True)

    def interrupted(self, name, signum, *, after=4, damage=None):
        workdir = self.root / name.replace(" ", "_")
        process = pretrain(workdir, self.data, wait=False)
        saved = workdir / "checkpoints" / str(after)  # complete: renamed from its temp folder
        wait_for(lambda: saved.is_dir() and max(losses(workdir), default=0) > after, process)
        process.send_signal(signum)
        _, stderr = process.communicate()
        first = subprocess.CompletedProcess([], process.returncode, "", stderr)
        if damage:
            damage(workdir)
        self.record(name, first, pretrain(workdir, self.data), workdir)


def prepare(folder: pathlib.Path) -> list[str]:
    """Vocabulary and instances from the built-in corpus, once: the probes' data overrides."""
    script = (
        "import sys, pathlib; from bertjax.config import load_config; "
        "from bertjax.training.pretrain import BUILTIN_CORPUS, prepare_data; "
        "c = load_config(sys.argv[1], sys.argv[3:] + ['--config.data.corpus=' + BUILTIN_CORPUS]); "
        "d, v = prepare_data(c, pathlib.Path(sys.argv[2])); "
        "print(d, v, len(v.read_text().splitlines()))"
    )
    command = [sys.executable, "-c", script, str(CONFIG), str(folder), *RUN]
    out = subprocess.run(command, env=env(), cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    data_dir, vocab, size = out.stdout.split()[-3:]
    return [
        f"--config.data.dir={data_dir}",
        f"--config.data.vocab={vocab}",
        f"--config.model.vocab_size={size}",
    ]


def lock_probes(p: Probes) -> None:
    workdir = p.root / "two_runs"
    first = pretrain(workdir, p.data, wait=False)
    wait_for(lambda: (workdir / ".bertjax.lock").exists(), first)
    second = pretrain(workdir, p.data, "--config.optim.learning_rate=1e-2")
    _, stderr = first.communicate()
    p.rows.append(
        (
            "second run on a workdir in use",
            last_line(second.stderr, second.returncode),
            f"{second.returncode} (first run {first.returncode})",
            "n/a",
            "no" if losses(workdir) == p.expected else "yes",
            "Traceback" in second.stderr + stderr,
        )
    )
    print(p.rows[-1], flush=True)
    workdir = p.root / "stale_lock"
    workdir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = {"host": os.uname().nodename, "pid": dead.pid, "started": time.time()}
    (workdir / ".bertjax.lock").write_text(json.dumps(owner))
    run = pretrain(workdir, p.data)
    p.record("stale lock of a killed run", run, run, workdir)


def torn_line(workdir: pathlib.Path) -> None:
    with (workdir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 6.2, "learning_r')


def truncate_latest_checkpoint(workdir: pathlib.Path) -> None:
    latest = max(int(x.name) for x in (workdir / "checkpoints").iterdir() if x.name.isdigit())
    data = workdir / "checkpoints" / str(latest) / "state" / "d"
    largest = max(data.iterdir(), key=lambda x: x.stat().st_size)
    with largest.open("r+b") as f:
        f.truncate(largest.stat().st_size // 3)


def flip_latest_checkpoint(workdir: pathlib.Path) -> None:
    latest = max(int(x.name) for x in (workdir / "checkpoints").iterdir() if x.name.isdigit())
    data = workdir / "checkpoints" / str(latest) / "state" / "d"
    largest = max(data.iterdir(), key=lambda x: x.stat().st_size)
    raw = bytearray(largest.read_bytes())
    for i in range(0, len(raw), max(1, len(raw) // 64)):
        raw[i] ^= 0xFF
    largest.write_bytes(bytes(raw))


def blocked_folder(p: Probes) -> None:
    """The checkpoints folder becomes a file after checkpoint 4 (a read-only folder for root)."""
    workdir = p.root / "blocked_checkpoints"
    ckpts = workdir / "checkpoints"
    process = pretrain(workdir, p.data, wait=False)
    wait_for(lambda: (ckpts / "4").is_dir(), process)
    time.sleep(0.2)
    ckpts.rename(workdir / "moved")
    ckpts.write_text("")
    _, stderr = process.communicate()
    first = subprocess.CompletedProcess([], process.returncode, "", stderr)
    ckpts.unlink()
    (workdir / "moved").rename(ckpts)
    p.record("checkpoint folder not writable mid-run", first, pretrain(workdir, p.data), workdir)


def mount_tmpfs(path: pathlib.Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    return done.returncode == 0


def fill(path: pathlib.Path, leave: int = 0) -> pathlib.Path:
    """Fills the filesystem of `path` up to `leave` bytes free with one file."""
    filler = path / "filler"
    free = shutil.disk_usage(path).free - leave
    with filler.open("wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        while free > 0:
            chunk = min(free, 1 << 20)
            try:
                f.write(b"\0" * chunk)
            except OSError:
                break
            free -= chunk
    return filler


def disk_full_probes(p: Probes) -> None:
    mount = p.root / "small_disk"
    if not mount_tmpfs(mount, "64m"):
        p.rows.append(("disk full (needs root for a tmpfs)", "skipped", "-", "-", "-", "-"))
        return
    try:
        workdir = mount / "train"
        process = pretrain(workdir, p.data, wait=False)
        wait_for(lambda: (workdir / "checkpoints" / "4").is_dir(), process)
        filler = fill(mount)
        _, stderr = process.communicate()
        first = subprocess.CompletedProcess([], process.returncode, "", stderr)
        filler.unlink()
        p.record("disk full during training", first, pretrain(workdir, p.data), workdir)
        shutil.rmtree(workdir)
        workdir = mount / "prepare"
        corpus = ["--config.data.corpus=builtin:python-docs", "--config.model.vocab_size=200"]
        filler = fill(mount, leave=256 << 10)
        first = pretrain(workdir, [], *corpus, "--config.train.num_steps=2")
        filler.unlink()
        rerun = pretrain(workdir, [], *corpus, "--config.train.num_steps=2")
        p.record("disk full during data preparation", first, rerun, workdir, resumable=False)
        p.rows[-1] = (*p.rows[-1][:3], "yes" if rerun.returncode == 0 else "no", *p.rows[-1][4:])
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def bad_input_probes(p: Probes) -> None:
    bad = p.root / "bad"
    bad.mkdir()
    sentences = "".join(f"Sentence {i} of a caf\xe9 au lait. " for i in range(40))
    (bad / "latin1.txt").write_bytes((sentences + "\n\n").encode("latin-1") * 20)
    (bad / "empty.txt").write_text("")
    (bad / "folder").mkdir()
    cases = [
        (
            "tokenizer: invalid UTF-8 (repaired)",
            ["tokenizer", bad / "latin1.txt", "--out", bad / "t1"],
        ),
        (
            "tokenizer: invalid UTF-8, --strict-utf8",
            ["tokenizer", bad / "latin1.txt", "--out", bad / "t4", "--strict-utf8"],
        ),
        ("tokenizer: empty file", ["tokenizer", bad / "empty.txt", "--out", bad / "t2"]),
        ("tokenizer: no file matches", ["tokenizer", bad / "none*.txt", "--out", bad / "t3"]),
    ]
    pre = ["pretrain", "--config", CONFIG]
    cases += [
        ("pretrain: empty corpus", [*pre, "--workdir", bad / "w1", f"--config.data.corpus={bad}/empty.txt"]),
        ("pretrain: config error", [*pre, "--workdir", bad / "w2", "--config.train.global_batch_size=0"]),
        ("pretrain: corpus glob matches nothing", [*pre, "--workdir", bad / "w3", f"--config.data.corpus={bad}/x*.txt"]),
        ("pretrain: invalid UTF-8 corpus (repaired)", [*pre, "--workdir", bad / "w4", f"--config.data.corpus={bad}/latin1.txt", *RUN[:1]]),
        ("pretrain: invalid UTF-8 corpus, strict_utf8", [*pre, "--workdir", bad / "w5", f"--config.data.corpus={bad}/latin1.txt", "--config.data.strict_utf8=True"]),
    ]  # fmt: skip
    for name, args in cases:
        done = cli(*args)
        left = [
            w
            for w in ("w1", "w2", "w3", "w5")
            if (bad / w).exists() and not any((bad / w).iterdir())
        ]
        summary = last_line(done.stderr, done.returncode) + (
            f" [empty {left} left]" if left else ""
        )
        p.rows.append((name, summary, done.returncode, "n/a", "n/a", "Traceback" in done.stderr))
        print(p.rows[-1], flush=True)
    shard_probes(p)


def shard_probes(p: Probes) -> None:
    data_dir = pathlib.Path(p.data[0].split("=", 1)[1])
    for name, damage in (
        ("truncated shard", "truncate"),
        ("token id beyond the vocabulary", "ids"),
    ):
        copy = p.root / f"data_{damage}"
        shutil.copytree(data_dir, copy)
        shard = copy / "train" / "input_ids-00000.npy"
        raw = bytearray(shard.read_bytes())
        if damage == "truncate":
            raw = raw[: len(raw) // 2]
        else:
            raw[-64:] = b"\xff" * 64
        shard.write_bytes(bytes(raw))
        done = pretrain(p.root / f"w_{damage}", [f"--config.data.dir={copy}", *p.data[1:]])
        p.rows.append(
            (
                name,
                last_line(done.stderr),
                done.returncode,
                "n/a",
                "n/a",
                "Traceback" in done.stderr,
            )
        )
        print(p.rows[-1], flush=True)


FINETUNE = REPO / "configs" / "finetune" / "text_classification.py"
TASK = ["--config.task.text_a=sentence", "--config.task.label=label", "--config.task.max_len=32"]
TASK += ["--config.train.global_batch_size=16", "--config.train.num_steps=2"]
TASK += ["--config.checkpoint.async_save=False"]


def once(p: Probes, name: str, done) -> None:
    """A probe run once: its last line, exit status and whether it printed a traceback."""
    summary = last_line(done.stderr, done.returncode)
    p.rows.append((name, summary, done.returncode, "n/a", "n/a", "Traceback" in done.stderr))
    print(p.rows[-1], flush=True)


def finetune_probes(p: Probes) -> None:
    """Bad fine-tuning input and damaged model folders (items 6 and 10), on the straight run's
    model; and a divergence before the first checkpoint (item 10)."""
    bad, model = p.root / "task", p.root / "straight" / "model"
    bad.mkdir()
    rows = "".join(f"sentence {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(48))
    (bad / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (bad / "dev.tsv").write_text(
        "sentence\tlabel\n" + "".join(rows.splitlines(True)[:16]) + "so so\tneutral\n"
    )
    (bad / "header.tsv").write_text("sentence\tlabel\n")
    (bad / "folder").mkdir()
    wrong, cut = p.root / "model_wrong", p.root / "model_cut"
    shutil.copytree(model, wrong)
    document = json.loads((wrong / "config.json").read_text())
    document["model"]["intermediate_size"] += 8
    (wrong / "config.json").write_text(json.dumps(document))
    shutil.copytree(model, cut)
    largest = max((x for x in (cut / "params").rglob("*") if x.is_file()), key=os.path.getsize)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 3])
    good = [f"--config.task.train_file={bad / 'train.tsv'}"]
    dev = f"--config.task.eval_file={bad / 'dev.tsv'}"
    cases = [
        ("finetune: eval label training never saw", model, [*good, dev]),
        ("finetune: a folder as train_file", model, [f"--config.task.train_file={bad / 'folder'}", dev]),
        ("finetune: header-only train file", model, [f"--config.task.train_file={bad / 'header.tsv'}", dev]),
        ("finetune: config.json not matching the parameters", wrong, [*good, f"--config.task.eval_file={bad / 'train.tsv'}"]),
        ("finetune: truncated parameter file", cut, [*good, f"--config.task.eval_file={bad / 'train.tsv'}"]),
    ]  # fmt: skip
    for index, (name, source, task) in enumerate(cases):
        workdir = bad / f"w{index}"
        args = ["finetune", "--config", FINETUNE, "--workdir", workdir]
        once(p, name, cli(*args, f"--config.init_from={source}", *TASK, *task))
    diverge = ["--config.optim.learning_rate=1e4", "--config.optim.warmup_steps=0"]
    diverge += ["--config.train.max_bad_steps=2", "--config.checkpoint.every_steps=100"]
    once(p, "divergence before any checkpoint", pretrain(bad / "diverged", p.data, *diverge))


def long_line_probe(p: Probes) -> None:
    """One 8 MB line with no newline to `bertjax tokenizer` (item 8: cut into pieces)."""
    words = " ".join(f"w{i % 5000}" for i in range(1_000_000))
    (p.root / "one_line.txt").write_text(words)
    done = cli("tokenizer", p.root / "one_line.txt", "--out", p.root / "one_line_vocab")
    once(p, "tokenizer: one 8 MB line", done)


def killed_preparation(p: Probes) -> None:
    """SIGKILL while the workdir's data is being prepared, then the same command (item 3)."""
    workdir = p.root / "killed_preparation"
    corpus = ["--config.data.corpus=builtin:python-docs", "--config.model.vocab_size=200"]
    process = pretrain(workdir, [], *corpus, "--config.train.num_steps=2", wait=False)
    wait_for(lambda: (workdir / "data").is_dir(), process)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    first = subprocess.CompletedProcess([], process.returncode, "", stderr)
    rerun = pretrain(workdir, [], *corpus, "--config.train.num_steps=2")
    p.record("SIGKILL during data preparation", first, rerun, workdir, resumable=False)
    p.rows[-1] = (*p.rows[-1][:3], "yes" if rerun.returncode == 0 else "no", *p.rows[-1][4:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    root = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="fault-probes-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    p = Probes(root)
    bad_input_probes(p)
    finetune_probes(p)
    long_line_probe(p)
    killed_preparation(p)
    p.interrupted("SIGKILL mid-run", signal.SIGKILL)
    p.interrupted("SIGTERM mid-run", signal.SIGTERM)
    p.interrupted("cut last line of metrics.jsonl", signal.SIGKILL, damage=torn_line)
    p.interrupted("truncated latest checkpoint", signal.SIGKILL, damage=truncate_latest_checkpoint)
    p.interrupted("bit-flipped latest checkpoint", signal.SIGKILL, damage=flip_latest_checkpoint)
    lock_probes(p)
    blocked_folder(p)
    disk_full_probes(p)
    print(f"\n{len(p.rows)} probes in {time.time() - started:.0f} s\n")
    print(
        "| probe | what it does now (last line) | exit | resumes exactly | lost anything | traceback |"
    )
    print("|---|---|---|---|---|---|")
    for name, what, code, exact, lost, tb in p.rows:
        what = what.replace("|", "/")
        print(f"| {name} | `{what}` | {code} | {exact} | {lost} | {'yes' if tb else 'no'} |")
    runs = [r for r in p.rows if r[3] != "n/a"]
    print(
        f"\n{len(p.rows)} probes; {len(runs)} interrupted runs, "
        f"{sum(r[3] == 'yes' for r in runs)} resume exactly, "
        f"{sum(r[4] == 'yes' for r in p.rows)} lose anything, "
        f"{sum(bool(r[5]) and r[5] != '-' for r in p.rows)} end in a traceback"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
