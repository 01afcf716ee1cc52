"""What a newcomer sees (issue 24): every suggested next step works for its family, an
evaluation line per evaluation, overfitting reported, the workdir's text log, Ctrl-C saves like
SIGTERM, the progress bar never below the last message, and no misleading error."""

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

from bertjax import cli
from bertjax.commands import finetune_cmd
from bertjax.data import prepare as prepare_lib
from bertjax.models.registry import FAMILIES
from bertjax.training import run_log, stops
from tests.conftest import REPO

TEST_CONFIG = REPO / "configs" / "test.py"
NO_SAVE = ["--config.checkpoint.async_save=False"]


def _lines(text: str) -> list[str]:
    """The lines a terminal shows: a carriage return redraws its line."""
    return [line.split("\r")[-1] for line in text.splitlines() if line.split("\r")[-1].strip()]


def _pretrain(workdir, prepared, *extra):
    args = ["pretrain", "--config", str(TEST_CONFIG), "--workdir", str(workdir), *prepared]
    return cli.main([*args, *NO_SAVE, *extra])


def test_an_mlm_run_logs_each_evaluation_and_suggests_commands_that_work(
    prepared, tmp_path, capsys, caplog
):
    workdir = tmp_path / "run"
    steps = ["--config.train.num_steps=6", "--config.train.log_every=2"]
    steps += ["--config.train.eval_every=2", "--config.objective=mlm"]
    caplog.set_level(logging.INFO)
    assert _pretrain(workdir, prepared, *steps) == 0
    out = capsys.readouterr().out
    # One line per evaluation (on the terminal, and in the workdir's log with its time);
    # MLM only: no NSP metric anywhere.
    evals = [r.getMessage() for r in caplog.records if "eval step" in r.getMessage()]
    assert [re.search(r"eval step (\d+):", line)[1] for line in evals] == ["2", "4", "6"]
    assert all("mlm accuracy" in line and "nsp" not in line for line in evals)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert not [key for r in records for key in r if "nsp" in key]
    text = (workdir / "log.txt").read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert len(re.findall(stamp + r".*eval step \d+: ", text)) == 3
    assert re.search(stamp + " Pretraining finished", text)
    # The BERT family's next steps: fill-mask runs on the model; the fine-tune command parses.
    assert "nsp" not in out.splitlines()[0] and "mlm accuracy" in out.splitlines()[0]
    commands = [line.strip() for line in out.splitlines() if line.startswith("  bertjax ")]
    assert [c.split()[1] for c in commands] == ["fill-mask", "finetune"]
    assert cli.main(shlex.split(commands[0])[1:]) == 0
    assert "[MASK] 1 of 1" in capsys.readouterr().out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_familys_next_steps_are_commands_it_supports(family, tmp_path):
    steps = FAMILIES[family].next_steps
    assert steps, f"family {family!r} suggests nothing after pretraining"
    parser = cli.build_parser()
    for _, template in steps:
        words = shlex.split(template.format(model=tmp_path / "model", workdir=tmp_path))
        args, extra = parser.parse_known_args(words[1:])
        assert all(e.startswith("--config.") for e in extra), template
        if getattr(args, "config", None):
            assert (REPO / args.config).is_file(), template
    names = [shlex.split(t)[1] for _, t in steps]
    # Masked LM for the encoders (ELECTRA: its generator), generation for the decoder,
    # translation for the encoder-decoders.
    seq2seq = "decoder_input_ids" in FAMILIES[family].input_fields
    assert ("translate" in names) == seq2seq and ("generate" in names) == (family == "gpt")
    assert ("fill-mask" in names) != (family == "gpt" or seq2seq)


def test_overfitting_is_a_held_out_loss_rising_while_the_training_loss_falls():
    watch = run_log.OverfitWatch()
    train = [{"loss": 3.0, "nsp_loss": 0.6}, {"loss": 2.5, "nsp_loss": 0.4}]
    train += [{"loss": 2.0, "nsp_loss": 0.2}, {"loss": 1.8, "nsp_loss": 0.1}]
    held = [{"mlm_loss": 2.8, "nsp_loss": 0.9}, {"mlm_loss": 2.6, "nsp_loss": 1.2}]
    held += [{"mlm_loss": 2.7, "nsp_loss": 1.85}, {"mlm_loss": 2.9, "nsp_loss": 2.0}]
    found = [
        watch.add(200 * (i + 1), h, t) for i, (h, t) in enumerate(zip(held, train, strict=True))
    ]
    assert found[:2] == [[], []]
    assert found[2] == [
        "overfitting: held-out nsp_loss rose 0.9 -> 1.2 -> 1.85 over steps 200..600 while the "
        "training nsp_loss fell 0.6 -> 0.4 -> 0.2"
    ]
    # mlm_loss rose twice only by step 800 (against the training loss); nsp_loss not again.
    assert found[3] == [
        "overfitting: held-out mlm_loss rose 2.6 -> 2.7 -> 2.9 over steps 400..800 while the "
        "training loss fell 2.5 -> 2 -> 1.8"
    ]
    # A held-out loss that rises while the training loss rises too is not overfitting.
    watch = run_log.OverfitWatch()
    assert not any(watch.add(s, {"loss": float(s)}, {"loss": float(s)}) for s in (1, 2, 3))


def test_run_log_repeats_notes_under_the_summary_and_appends_on_a_rerun(tmp_path, capsys):
    def job(config, workdir):
        workdir.mkdir()
        logging.getLogger("bertjax.test").warning("overfitting: x", extra={"summary": True})
        return {"accuracy": 0.5}

    workdir = tmp_path / "w"
    assert run_log.run_job("finetune", job, None, workdir, lambda m: f"done {m}") == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["done {'accuracy': 0.5}", "Notes:", "  overfitting: x"]
    log = (workdir / "log.txt").read_text()
    assert "WARNING bertjax.test: overfitting: x" in log and log.rstrip().endswith("overfitting: x")
    # A rerun appends, also the error of a rerun that fails (the workdir and its log stay).
    with pytest.raises(FileExistsError):
        run_log.run_job("finetune", job, None, workdir, str)
    assert (workdir / "log.txt").read_text().startswith(log)
    assert "error: [Errno 17] File exists" in (workdir / "log.txt").read_text()


def test_a_corpus_glob_matching_nothing_leaves_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "new"
    corpus = f"--config.data.corpus={tmp_path}/nothing/*.txt"
    assert (
        cli.main(["pretrain", "--config", str(TEST_CONFIG), "--workdir", str(workdir), corpus]) == 2
    )
    assert "nothing" in capsys.readouterr().err and not workdir.exists()


SECOND_CTRL_C = """
import os, signal, sys, time
from bertjax.training.stops import Preemption
with Preemption(None) as p:
    os.kill(os.getpid(), signal.SIGINT)
    assert p.reached(1)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
"""


def test_a_second_ctrl_c_quits_at_once():
    done = subprocess.run(
        [sys.executable, "-c", SECOND_CTRL_C], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == stops.EXIT_INTERRUPTED, done.stderr
    assert "second Ctrl-C: quitting now, without saving" in done.stderr


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_says_how_to_resume(prepared, tmp_path, capsys):
    from tests.training.test_reliability import _losses, _steps

    def press_ctrl_c():  # once the loop has run 3 steps (of 400)
        deadline = time.time() + 300
        while time.time() < deadline:
            if (tmp_path / "metrics.jsonl").exists() and max(_losses(tmp_path), default=0) >= 3:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    steps = ["--config.train.num_steps=400", "--config.train.log_every=1"]
    assert _pretrain(tmp_path, prepared, *steps, "--config.train.eval_every=0") == 130
    last = max(_losses(tmp_path))
    assert 3 <= last < 400 and _steps(tmp_path)[-1] == last  # saved at the step it stopped
    err = capsys.readouterr().err
    assert _lines(err)[-1] == (
        f"bertjax pretrain: stopped: stopped by SIGINT (Ctrl-C) at step {last}; its checkpoint "
        f"is in {tmp_path / 'checkpoints'}: rerun the same command to resume"
    )
    assert "Ctrl-C again quits at once" in err and "Traceback" not in err


def test_eval_only_ends_with_an_evaluation_message(tmp_path):
    text = finetune_cmd.summary(tmp_path, tmp_path, "classification", {"acc": 0.9}, eval_only=True)
    assert text.startswith("Evaluation finished. Eval metrics: acc 0.9.")


def test_fill_mask_on_a_fine_tuned_model_and_predict_on_an_unfinished_run_say_why(tmp_path, capsys):
    finished = tmp_path / "done"
    (finished / "model").mkdir(parents=True)
    (finished / "finetune.json").write_text("{}")
    assert cli.main(["fill-mask", str(finished / "model"), "a [MASK]."]) == 2
    err = capsys.readouterr().err
    assert "is a fine-tuned model: it has a task head, no masked-LM head" in err
    assert f"bertjax predict {finished}" in err
    # What an interrupted fine-tuning run leaves: its data counts and checkpoints, no model yet.
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "data_stats.json").write_text("{}")
    assert cli.main(["predict", str(unfinished), "--text", "fine"]) == 2
    err = capsys.readouterr().err
    assert "is an unfinished fine-tuning run" in err and "rerun the same `bertjax finetune`" in err


def test_import_hf_checks_the_destination_before_converting(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    # The source does not even exist: the destination is refused first.
    assert cli.main(["import-hf", str(tmp_path / "absent"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not empty (--overwrite" in err and "absent" not in err


def test_mlm_only_preparation_keeps_single_sentence_documents(prepared, tmp_path):
    vocab = next(a.split("=", 1)[1] for a in prepared if a.startswith("--config.data.vocab="))
    corpus = tmp_path / "one_liners.txt"
    corpus.write_text("".join(f"the cat sat on {i} .\n\n" for i in range(40)))
    options = dict(max_seq_len=32, eval_fraction=0.0)
    kept = prepare_lib.prepare([corpus], vocab, tmp_path / "mlm", nsp=False, **options)
    skipped = prepare_lib.prepare([corpus], vocab, tmp_path / "nsp", **options)
    assert skipped["statistics"]["documents_skipped_single_sentence"] == 40
    assert skipped["splits"]["train"]["num_examples"] == 0
    assert kept["statistics"]["documents_skipped_single_sentence"] == 0
    assert kept["statistics"]["documents_skipped_after_tokenization"] == 0
    assert kept["splits"]["train"]["num_examples"] == 40


def test_readme_shell_commands_need_no_bertjax_data_variable():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    unquoted = [
        line for b in blocks for line in b.splitlines() if re.search(r"(?<!')\$BERTJAX_DATA", line)
    ]
    assert not unquoted, unquoted


AFTER_ABSL = """
import logging
logging.basicConfig()  # what absl does on its first message (orbax logs at import)
from bertjax.commands import setup_logging
setup_logging()
logging.getLogger("bertjax.training.loop").info("eval step 2: loss 1")
"""


def test_info_lines_reach_the_terminal_even_after_absl_configured_logging():
    done = subprocess.run(
        [sys.executable, "-c", AFTER_ABSL], cwd=REPO, capture_output=True, text=True
    )
    assert done.stderr == "INFO bertjax.training.loop: eval step 2: loss 1\n"
