"""Smoke runs of the pretraining benchmarks with tiny settings, in-process through `main(argv)`."""

import importlib.util
import math
import sys

import pytest

from tests.conftest import REPO


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One workdir for both runs: the built-in corpus is prepared once, at length 32."""
    return tmp_path_factory.mktemp("benchmarks")


@pytest.mark.slow
def test_pretrain_quality_runs(workdir):
    quality = load_benchmark("pretrain_quality")
    result = quality.main(
        [
            f"--config={REPO / 'configs' / 'tiny.py'}",
            "--corpus=builtin:python-docs",
            "--steps=5",
            "--batch=8",
            "--seq=32",
            "--eval_batches=2",
            f"--workdir={workdir / 'shared'}",
        ]
    )
    assert result["steps"] == 5
    for key in ("eval_mlm_accuracy", "eval_mlm_loss", "baseline_accuracy", "train_loss"):
        assert math.isfinite(result[key]), key
    # Five steps take the held-out MLM loss below a uniform guess over the trained vocabulary.
    vocab = len((workdir / "shared" / "tokenizer" / "vocab.txt").read_text().splitlines())
    assert result["eval_mlm_loss"] < math.log(vocab)
    assert result["eval_tokens"] > 0 and result["train_tokens"] > result["eval_tokens"]


@pytest.mark.slow
def test_peer_pretraining_agrees_for_ten_steps(workdir):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    peer = load_benchmark("peer_pretraining")
    result = peer.main(
        ["--steps", "10", "--batch", "8", "--seq", "32", "--workdir", str(workdir / "shared")]
    )
    assert result["steps"] == 10
    assert math.isfinite(result["max_rel_diff"])
    assert result["max_rel_diff"] < 1e-4  # float32 noise; main() itself fails above 1%
    assert result["max_lr_gap"] < 1e-9
    assert result["decayed_params"][0] == result["decayed_params"][1]
    # Ten steps at lr up to 1e-3 lower the loss on both sides.
    assert result["last_loss"][0] < result["first_loss"][0]
    assert result["last_loss"][1] < result["first_loss"][1]


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_cost_runs(whole_word):
    result = load_benchmark("masking_cost").main(
        [
            f"--config={REPO / 'configs' / 'tiny.py'}",
            "--batch=4",
            "--seq=32",
            "--iters=2",
            f"--config.data.whole_word_masking={whole_word}",
        ]
    )
    assert result["mask_alone_ms"] > 0
    assert result["step_with_masking_ms"] > result["mask_alone_ms"]
    assert 0 < result["mask_alone_share_pct"] < 100


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-4), ("bfloat16", 2e-2)])
def test_attention_check_xla_matches_the_float32_reference(dtype, tolerance):
    result = load_benchmark("attention_check").main(
        [f"--config={REPO / 'configs' / 'tiny.py'}", "--batch=3", "--seq=16", f"--dtype={dtype}"]
    )
    errors = result["impls"]["xla"]  # a CPU has no cuDNN
    assert set(errors) == {"out", "dq", "dk", "dv", "model"}
    assert result["passed"] and result["worst"] <= tolerance
    if dtype == "bfloat16":  # bf16 really is compared: its rounding shows, within bounds
        assert errors["out"] > 1e-4


def test_gpu_suite_smoke_runs_every_script_it_uses(tmp_path):
    suite = load_benchmark("gpu_suite")
    tiny = suite.smoke_argv(
        [
            f"--config={REPO / 'configs' / 'large.py'}",
            "--seq=512",
            "--config.model.attention_impl=cudnn",
        ]
    )
    assert tiny == [f"--config={REPO / 'configs' / 'tiny.py'}", "--seq=32"]
    groups = "--groups=attention,large128,large512,masking"
    records = suite.main(["--smoke", groups, f"--out={tmp_path}"])
    assert [r["status"] for r in records] == ["ok"] * 6, records
    by_case = {r["case"]: r for r in records}
    fits = by_case["train large seq 512 batch 32, remat dots"]
    assert fits["result"]["rows"][0]["seq_per_s"] > 0
    # No MFU on a CPU (no known peak): that goal is reported as not met rather than guessed.
    assert fits["goals"][0] == {"goal": "MFU >= 45%", "value": None, "met": False}
    assert all(g["met"] for g in by_case["attention, base seq 128"]["goals"])
    scanned = by_case["train large seq 128 batch 64, layers scanned (bertjax only)"]
    compile_goal = scanned["goals"][1]
    assert compile_goal["goal"] == "compile <= 60 s" and compile_goal["met"]  # tiny on a CPU
    assert "| masking share, large seq 128 batch 64 |" in (tmp_path / "suite.md").read_text()


def test_packing_benchmark_reports_both_sides(prepared):
    data = next(o.split("=", 1)[1] for o in prepared if o.startswith("--config.data.dir="))
    rows = load_benchmark("packing").main(
        [
            f"--data={data}",
            f"--config={REPO / 'configs' / 'test.py'}",
            "--batch=8",
            "--warmup=1",
            "--steps=2",
            *(o for o in prepared if o.startswith("--config.model.")),
        ]
    )
    assert [r["packing"] for r in rows] == ["off", "max 3"]
    assert rows[0]["instances_per_row"] == 1.0 and rows[1]["instances_per_row"] >= 1.0
    assert rows[1]["rows"] <= rows[0]["rows"]
    assert all(r["real_tokens_per_s"] > 0 for r in rows)


@pytest.mark.parametrize("forward", [False, True])
def test_profile_step_attributes_time_to_model_scopes(forward):
    argv = [f"--config={REPO / 'configs' / 'tiny.py'}", "--batch=8", "--seq=32", "--steps=1"]
    result = load_benchmark("profile_step").main(argv + (["--forward"] if forward else []))
    assert result["total_ms"] > 0
    scopes = result["scopes_ms"]
    assert any("encoder/layer_*/attention" in key for key in scopes), scopes
    assert any(key.startswith("bwd ") for key in scopes) != forward
    if not forward:
        assert any(key.startswith(("heads/mlm", "bwd heads/mlm")) for key in scopes), scopes


def test_gpt_step_times_bertjax_and_transformers_side_by_side():
    pytest.importorskip("transformers")
    argv = [
        f"--config={REPO / 'configs' / 'gpt' / 'tiny.py'}",
        "--batch=8",  # a row for each of the 8 test devices
        "--seq=16",
    ]
    times = load_benchmark("gpt_step").main([*argv, "--steps=1", "--warmup=0", "--vocab_size=256"])
    assert set(times) == {"bertjax (jit)", "transformers"} and min(times.values()) > 0


def test_family_comparison_plans_seed_by_seed_task_by_task_with_budgets():
    import argparse

    fc = load_benchmark("family_comparison")
    args = argparse.Namespace(arms="bert,electra,lstm_scratch", tasks="sst2,conll2003")
    args.seeds, args.points, args.budget_tasks = "0,1", 2, "sst2"
    done = {a: fc.Pretrained(a, REPO, n, 1.0, 0.0) for a, n in [("bert", 300), ("electra", 280)]}
    assert fc.plan(args, done) == [
        ("bert", "sst2", 0, 150),  # half the budget: score against pretraining FLOPs
        ("bert", "sst2", 0, 300),
        ("electra", "sst2", 0, 140),
        ("electra", "sst2", 0, 280),
        ("lstm_scratch", "sst2", 0, 0),
        ("bert", "conll2003", 0, 300),  # not a budget task: the full budget only
        ("lstm_scratch", "conll2003", 0, 0),
        ("bert", "sst2", 1, 300),  # the other seeds at the full budget
        ("electra", "sst2", 1, 280),
        ("lstm_scratch", "sst2", 1, 0),
        ("bert", "conll2003", 1, 300),
        ("lstm_scratch", "conll2003", 1, 0),
    ]
    assert fc.mean_sd([70.0, 72.0]) == "71.0 ± 1.4 (2 seeds)" and fc.mean_sd([]) == "-"


def test_finetune_all_runs_only_what_results_jsonl_lacks(tmp_path, monkeypatch):
    """Both comparisons' resume: a rerun fine-tunes the missing runs only, each from its arm's
    model at that step (random weights for an arm not pretrained), and appends their rows."""
    fc = load_benchmark("family_comparison")
    pretrained = {"electra": fc.Pretrained("electra", tmp_path / "e", 300, 2e9, 0.0)}
    (tmp_path / "results.jsonl").write_text(
        '{"arm": "electra", "task": "sst2", "seed": 0, "step": 300, "metrics": {}}\n'
    )
    calls = []

    def fake_finetune(args, arm, task, seed, init, shared, workdir):
        calls.append((arm, task, seed, init, workdir.name))
        return {"metrics": {"accuracy": 0.5}, "seconds": 1.0}

    monkeypatch.setattr(fc, "run_finetune", fake_finetune)
    runs = [("electra", "sst2", 0, 300), ("electra", "rte", 0, 300), ("lstm_scratch", "rte", 1, 0)]
    done = fc.finetune_all(None, tmp_path, runs, {}, pretrained)
    assert calls == [
        ("electra", "rte", 0, tmp_path / "e" / "model", "electra-300-rte-0"),
        ("lstm_scratch", "rte", 1, None, "lstm_scratch-0-rte-1"),
    ]
    assert set(done) == set(runs) and done[runs[1]]["flops"] == 300 * 2e9
    assert len(fc.read_results(tmp_path / "results.jsonl")) == 3
    assert fc.finetune_all(None, tmp_path, runs, {}, pretrained) == done and len(calls) == 2


def test_adversarial_electra_arms_differ_only_in_the_objective(tmp_path):
    """Issue 25's arms: one config field apart; `--model` swaps both networks' shape."""
    import argparse

    ae = load_benchmark("adversarial_electra")
    parser = argparse.ArgumentParser()
    ae.fc.add_shared_args(parser, ae.OBJECTIVES, ae.TASKS)
    args = parser.parse_args(["--out", str(tmp_path)])
    args.corpus, args.mle_weight, args.model = "a.txt", 0.0, "configs/electra/tiny.py"
    shared = {"data_dir": tmp_path, "vocab": tmp_path / "vocab.txt", "vocab_size": 1000}
    ml, adv = (ae.arm_config(args, arm, shared).to_dict() for arm in ae.OBJECTIVES)
    assert {k for k in ml if ml[k] != adv[k]} == {"objective"}
    assert (ml["objective"], adv["objective"]) == ("rtd", "rtd_adversarial")
    assert ml["model"]["hidden_size"] == 128 and ml["model"]["generator_fraction"] == 0.5
    assert ml["model"]["vocab_size"] == 1000 and ml["optim"]["learning_rate"] == 5e-4


def test_korean_comparison_arms_differ_only_in_what_they_compare(tmp_path):
    """Issue 16's arms: pretrained the same way except the pre-tokenizer, or entity-awareness."""
    import argparse

    kc = load_benchmark("korean_comparison")
    parser = argparse.ArgumentParser()
    kc.family_comparison.add_shared_args(parser, kc.ARMS, kc.TASKS)
    args = parser.parse_args(["--out", str(tmp_path)])
    args.corpus = "a.txt,b.txt"

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    gazetteer = tmp_path / "titles.txt"
    configs = {a: dict(flat(kc.pretrain_config(args, a, gazetteer).to_dict())) for a in kc.ARMS}
    base = configs["whitespace"]
    differs = {a: {k for k in base if c[k] != base[k]} for a, c in configs.items()}
    assert differs == {
        "whitespace": set(),
        "morpheme": {"data.pretokenizer"},
        "entities": {"data.entities", "model.entity_vocab_size"},
    }
    assert base["data.lowercase"] is False and base["data.corpus"] == "a.txt,b.txt"
    assert configs["entities"]["data.entities"] == f"gazetteer:{gazetteer}"
