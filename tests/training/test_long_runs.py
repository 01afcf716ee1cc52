"""Long-run features of the trainer: early stop, profiler traces, goodput accounting."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.interop import formats
from bertjax.training import early_stop, loop, profiling, trainer
from bertjax.training.pretrain import BUILTIN_CORPUS, pretrain, setup
from tests.conftest import REPO

TEST_CONFIG = REPO / "configs" / "test.py"


def _config(prepared, *overrides):
    return load_config(TEST_CONFIG, [*prepared, *overrides])


def test_early_stop_patience_counts_over_resumes(tmp_path):
    config = load_config(
        TEST_CONFIG,
        [
            "--config.train.early_stop.metric=loss",
            "--config.train.early_stop.mode=min",
            "--config.train.early_stop.patience=2",
        ],
    )
    stopper = early_stop.EarlyStop(config, tmp_path, step=0)
    assert not stopper.update(2, {"loss": 3.0}, 1.0)
    assert not stopper.update(4, {"loss": 3.5}, 2.0)  # one evaluation without a new best
    # a resume from the checkpoint of step 2 drops the evaluation of step 4 and counts again
    resumed = early_stop.EarlyStop(config, tmp_path, step=2)
    assert [e["step"] for e in resumed.history] == [2]
    assert not resumed.update(4, {"loss": 3.2}, 2.0)
    assert resumed.update(6, {"loss": 3.1}, 3.0)  # two evaluations without beating 3.0
    assert resumed.summary()["early_stop_step"] == 6
    assert "target_reached_step" not in resumed.summary()
    with pytest.raises(ValueError, match="early_stop.metric='loss' is not an evaluation metric"):
        resumed.update(8, {"accuracy": 0.5}, 4.0)


def test_early_stop_config_errors_name_the_field():
    with pytest.raises(ValueError, match="config.train.early_stop.mode='up'"):
        early_stop.check_config(load_config(TEST_CONFIG, ["--config.train.early_stop.mode=up"]))
    with pytest.raises(ValueError, match="needs a target"):
        early_stop.check_config(
            load_config(TEST_CONFIG, ["--config.train.early_stop.metric=mlm_accuracy"])
        )


def test_two_phase_configs_check_and_name_init_from():
    for size in ("base", "large"):
        phase1 = load_config(REPO / "configs" / "two_phase" / f"bert_{size}_phase1.py")
        trainer.check_config(phase1)
        assert (phase1.train.global_batch_size, phase1.data.max_seq_len) == (65_536, 128)
        path = REPO / "configs" / "two_phase" / f"bert_{size}_phase2.py"
        with pytest.raises(ValueError, match="set config.init_from=PHASE1_WORKDIR"):
            trainer.check_config(load_config(path))
        phase2 = load_config(path, ["--config.init_from=/phase1"])
        trainer.check_config(phase2)
        assert (phase2.train.global_batch_size, phase2.data.max_seq_len) == (32_768, 512)


def test_profile_steps_are_checked():
    assert profiling.parse_steps("5:7") == (5, 7) and profiling.parse_steps("3") == (3, 3)
    assert profiling.parse_steps("") is None
    for bad in ("7:5", "0:2", "a:b", "1:2:3"):
        with pytest.raises(ValueError, match="config.train.profile_steps"):
            profiling.parse_steps(bad)


def test_run_stops_at_the_target_traces_its_steps_and_a_rerun_trains_no_further(prepared, tmp_path):
    """One tiny run for early stop and profiler traces: it stops at its first evaluation
    (step 3, the target is reached at once) after tracing steps 2 and 3."""
    config = _config(
        prepared,
        "--config.train.num_steps=12",
        "--config.train.log_every=3",
        "--config.train.eval_every=3",
        "--config.train.profile_steps=2:3",
        "--config.train.early_stop.metric=mlm_loss",
        "--config.train.early_stop.mode=min",
        "--config.train.early_stop.target=100.0",  # the first evaluation reaches it
    )
    final = pretrain(config, tmp_path)
    assert final["target_reached_step"] == 3 and final["early_stop_step"] == 3
    assert final["target_reached_seconds"] > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 3
    assert any(r.get("early_stop_step") == 3 for r in records)
    assert json.loads((tmp_path / "final_metrics.json").read_text()) == final
    traces = list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 10_000
    again = pretrain(config, tmp_path)
    assert again["early_stop_step"] == 3 and again["eval_mlm_loss"] == final["eval_mlm_loss"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3"]


def _named(tree, name):
    """The leaves of `tree` under a field called `name` (optax state fields: count, mu, nu)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [x for path, x in leaves if any(getattr(k, "name", None) == name for k in path)]


def test_phase_two_takes_the_whole_train_state_at_another_length(prepared, tmp_path):
    """Phase 1 at length 32, phase 2 on data prepared at 48 with its own max_predictions, from
    phase 1's parameters and optimizer moments; the step and schedule restart when asked."""
    phase1 = tmp_path / "phase1"
    steps = ["--config.train.eval_every=0", "--config.checkpoint.every_steps=4"]
    pretrain(_config(prepared, "--config.train.num_steps=4", *steps), phase1)
    phase2 = [
        f"--config.data.corpus={BUILTIN_CORPUS}",
        "--config.data.max_seq_len=48",
        "--config.data.max_predictions=8",
        "--config.data.eval_fraction=0.05",
        f"--config.init_from={phase1}",
        "--config.init_train_state=True",
        "--config.train.num_steps=2",
        "--config.optim.warmup_steps=2",
        *steps,
    ]
    job = setup(load_config(TEST_CONFIG, phase2), tmp_path / "phase2")
    assert int(job.state.step) == 0
    assert all(int(c) == 0 for c in _named(job.state.opt_state, "count"))
    assert all(float(jnp.abs(m).max()) > 0 for m in _named(job.state.opt_state, "mu"))  # not fresh
    _, phase1_params = formats.load_pretrained(phase1 / "model")
    for a, b in zip(jax.tree.leaves(phase1_params), jax.tree.leaves(job.state.params), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert job.train_source.max_seq_len == 48
    final = loop.train(job)
    job.close()
    # the schedule restarted: step 2 uses warmup's 1/2 of the peak (phase 1 ended at 4 steps)
    assert np.isfinite(final["loss"]) and final["learning_rate"] == pytest.approx(5e-4)
    lines = (tmp_path / "phase2" / "metrics.jsonl").read_text().splitlines()
    assert [r["step"] for r in map(json.loads, lines) if "loss" in r] == [2]  # counted from 0
    # reset_step=False: the step and the optimizer's counts go on from phase 1's
    kept = setup(
        load_config(TEST_CONFIG, [*phase2, "--config.train.reset_step=False"]), tmp_path / "kept"
    )
    assert int(kept.state.step) == 4
    assert all(int(c) == 4 for c in _named(kept.state.opt_state, "count"))
    kept.close()
    with pytest.raises(FileNotFoundError, match="config.init_from=.* has no checkpoints/"):
        setup(
            load_config(
                TEST_CONFIG,
                [
                    *phase2[:-5],
                    f"--config.init_from={phase1}/model",
                    "--config.init_train_state=True",
                ],
            ),
            tmp_path / "bad",
        )
