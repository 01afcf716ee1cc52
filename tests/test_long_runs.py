"""Long-run features of the trainer: early stop, profiler traces, goodput accounting."""

import json

import pytest

from bertjax.config import load_config
from bertjax.training import early_stop, profiling
from bertjax.training.pretrain import pretrain
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
