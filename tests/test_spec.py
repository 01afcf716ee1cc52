"""The run spec (bertjax.spec): one field swaps the family, impossible combinations are refused
before any data work, the resolved config is frozen into the workdir and a rerun of another
config is refused. No JAX compile: config resolution and the jobs' first lines only."""

import json

import pytest

from bertjax import cli, spec
from bertjax.config import load_config
from bertjax.interop import model_dir
from bertjax.models import model_config
from bertjax.training import finetune, pretrain
from tests.conftest import REPO

QUICKSTART = REPO / "configs" / "quickstart.py"


def _swap(family, *overrides, path=QUICKSTART):
    return load_config(path, [f"--config.model.family={family}", *overrides])


@pytest.mark.parametrize(
    "family,objective,tokenizer,instances",
    [
        ("gpt", "causal_lm", "byte_bpe", "lm_blocks"),
        ("electra", "rtd", "wordpiece", "nsp_pairs"),
        ("rnn", "mlm", "wordpiece", "nsp_pairs"),
        ("bert", "mlm_nsp", "wordpiece", "nsp_pairs"),
    ],
)
def test_one_field_swaps_the_family_keeping_the_shared_sizes(
    family, objective, tokenizer, instances
):
    config = _swap(family)
    assert (config.objective, config.data.tokenizer, config.data.instances) == (
        objective,
        tokenizer,
        instances,
    )
    spec.check(config)
    _, cfg = model_config(config.model)  # every field is the family's, and valid
    assert (cfg.hidden_size, cfg.num_layers, cfg.vocab_size) == (128, 2, 8000)
    assert config.data.max_seq_len == 128 and config.train.num_steps == 600  # the run is kept


def test_the_swap_takes_each_familys_own_fields():
    gpt = _swap("gpt")
    assert "type_vocab_size" not in gpt.model and "entity_vocab_size" not in gpt.model
    assert (gpt.model.hidden_act, gpt.model.layer_norm_eps, gpt.data.lowercase) == (
        "gelu_tanh",
        1e-5,
        False,
    )
    electra = _swap("electra")
    assert electra.rtd.discriminator_weight == 50.0
    assert (electra.data.mask_token_prob, electra.data.random_token_prob) == (1.0, 0.0)
    assert electra.model.embedding_size == 128 and electra.model.generator_fraction == 0.25
    rnn = _swap("rnn")
    assert "num_heads" not in rnn.model and "max_position_embeddings" not in rnn.model
    assert rnn.model.embedding_size == rnn.model.rnn_size == 128  # follows hidden_size
    back = _swap("bert", path=REPO / "configs" / "electra" / "base.py")
    assert "rtd" not in back and back.objective == "mlm_nsp"
    assert back.data.mask_token_prob == 0.8 and "embedding_size" not in back.model


def test_explicit_choices_survive_the_swap_and_defaults_do_not():
    # configs/gpt/quickstart.py turns dropout off (explicit) and uses GPT's activation (default)
    bert = _swap("bert", path=REPO / "configs" / "gpt" / "quickstart.py")
    assert bert.model.hidden_dropout == 0.0 and bert.model.hidden_act == "gelu"
    assert bert.model.layer_norm_eps == 1e-12 and "eos_token_id" not in bert.model
    assert (bert.objective, bert.data.tokenizer, bert.data.lowercase) == (
        "mlm_nsp",
        "wordpiece",
        True,
    )
    # overrides apply after the swap: explicit, whatever their order
    gpt = _swap("gpt", "--config.model.hidden_act=gelu", "--config.data.lowercase=True")
    assert (gpt.model.hidden_act, gpt.data.lowercase) == ("gelu", True)


def test_a_setting_the_new_family_lacks_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"config\.model\.rnn_size=16 .* family 'rnn'"):
        _swap("bert", path=REPO / "configs" / "rnn" / "test.py")
    with pytest.raises(ValueError, match=r"--config\.model\.entity_vocab_size: .*'gpt' has no"):
        _swap("gpt", "--config.model.entity_vocab_size=2")
    with pytest.raises(ValueError, match=r"config\.model\.family='llama' is invalid"):
        _swap("llama")


def test_combinations_that_cannot_work_are_refused_naming_both_fields():
    with pytest.raises(ValueError) as err:
        spec.check(_swap("gpt", "--config.objective=mlm_nsp"))
    message = str(err.value)
    assert "config.objective='mlm_nsp'" in message and "config.model.family='gpt'" in message
    assert message.endswith("objectives for 'gpt': causal_lm") and "\n" not in message
    with pytest.raises(ValueError, match=r"config\.data\.instances='nsp_pairs' .* lm_blocks"):
        spec.check(_swap("gpt", "--config.data.instances=nsp_pairs"))


def test_a_fine_tuning_config_swaps_only_its_model_group():
    config = _swap("gpt", path=REPO / "configs" / "finetune" / "sst2.py")
    assert config.model.family == "gpt" and "objective" not in config
    assert "tokenizer" not in config.data and config.task.kind == "classification"
    assert (config.model.vocab_size, config.model.hidden_size) == (0, 0)  # init_from decides
    rnn = _swap("rnn", "--config.model.hidden_size=64", path=REPO / "configs/finetune/sst2.py")
    assert rnn.model.embedding_size == rnn.model.rnn_size == 64 and rnn.model.cell == "lstm"


def _tiny(*overrides):
    config = load_config(REPO / "configs" / "test.py", list(overrides))
    _, cfg = model_config({**config.model.to_dict(), "vocab_size": 100})  # "from the data"
    return config, cfg


def test_the_resolved_config_is_frozen_whole_with_values_from_the_data(tmp_path):
    config, cfg = _tiny()
    frozen = spec.freeze(config, cfg)
    assert frozen.model.vocab_size == 100 and config.model.vocab_size == 128  # not written back
    with pytest.raises(AttributeError):
        frozen.model.vocab_size = 5
    spec.record(config, cfg, tmp_path)
    stored = json.loads((tmp_path / spec.RUN_CONFIG).read_text())
    assert stored["config"]["model"]["vocab_size"] == 100
    assert stored["config"]["optim"]["learning_rate"] == config.optim.learning_rate
    assert stored["requested"] == {"model.vocab_size": 128}
    assert spec.show_workdir(tmp_path) == stored["config"]


def test_a_rerun_with_another_model_data_or_objective_is_refused(tmp_path):
    config, cfg = _tiny()
    spec.record(config, cfg, tmp_path)
    for override, field in [
        ("--config.model.num_layers=4", "config.model.num_layers=4 (was 2)"),
        ("--config.optim.b2=0.98", "config.optim.b2=0.98"),
        ("--config.objective=mlm", "config.objective='mlm' (was 'mlm_nsp')"),
        ("--config.data.max_seq_len=32", "config.data.max_seq_len=32"),
        ("--config.train.global_batch_size=16", "config.train.global_batch_size=16"),
    ]:
        with pytest.raises(ValueError) as err:
            spec.begin(load_config(REPO / "configs" / "test.py", [override]), tmp_path)
        assert field in str(err.value) and "\n" not in str(err.value), override
    spec.begin(config, tmp_path)  # the same config: accepted (vocab_size came from the data)


def test_a_rerun_may_change_steps_evaluation_and_logging_and_they_are_recorded(tmp_path):
    config, cfg = _tiny()
    spec.record(config, cfg, tmp_path)
    changed = [
        "--config.train.num_steps=40",
        "--config.train.eval_every=5",
        "--config.train.log_every=1",
        "--config.checkpoint.every_steps=5",
        "--config.train.watchdog_seconds=60.0",
        "--config.data.prefetch=4",
        "--config.distributed.num_processes=2",
        "--config.optim.learning_rate=1e-05",  # the README's answer to a diverged run
    ]
    again = load_config(REPO / "configs" / "test.py", changed)
    spec.begin(again, tmp_path)
    spec.record(again, cfg, tmp_path)
    (line,) = (tmp_path / spec.HISTORY).read_text().splitlines()
    assert json.loads(line)["changed"]["train.num_steps"] == [20, 40]
    assert len(json.loads(line)["changed"]) == len(changed)
    stored = json.loads((tmp_path / spec.RUN_CONFIG).read_text())
    assert stored["config"]["train"]["num_steps"] == 40


def test_a_workdir_from_before_the_run_spec_still_resumes_and_refuses_another_model(tmp_path):
    config, cfg = _tiny()
    (tmp_path / "config.json").write_text(json.dumps(model_dir.config_document(cfg)))
    _, other = _tiny("--config.model.num_layers=4")
    with pytest.raises(ValueError, match=r"config\.model\.num_layers=4 \(was 2\)"):
        spec.record(config, other, tmp_path)
    assert not (tmp_path / spec.RUN_CONFIG).exists()
    spec.record(config, cfg, tmp_path)  # the same model: resumes, and now has its run spec
    assert (tmp_path / spec.RUN_CONFIG).is_file()


@pytest.mark.parametrize("job", [pretrain, finetune])
def test_the_jobs_refuse_before_writing_anything(job, tmp_path):
    if job is pretrain:
        config, cfg = _tiny()
        changed = load_config(REPO / "configs" / "test.py", ["--config.model.num_layers=4"])
    else:
        path = REPO / "configs" / "finetune" / "sst2.py"
        config, changed = load_config(path), load_config(path, ["--config.task.max_len=32"])
        _, cfg = _tiny()
    spec.record(config, cfg, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="holds a run of another config"):
        job.setup(changed, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    bad = _swap("gpt", "--config.objective=rtd")
    with pytest.raises(ValueError, match=r"config\.objective='rtd' does not train"):
        pretrain.setup(bad, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_config_show_prints_the_resolved_config_and_one_line_errors(capsys):
    assert cli.main(["config", "show", str(QUICKSTART), "--config.model.family=electra"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["objective"] == "rtd" and shown["model"]["generator_fraction"] == 0.25
    assert shown["model"]["tie_embeddings"] is True and shown["rtd"]["discriminator_weight"] == 50
    code = cli.main(["config", "show", str(QUICKSTART), "--config.objective=causal_lm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("bertjax config: error: config.objective='causal_lm'")
    assert "\n" not in err
