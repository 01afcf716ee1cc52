"""The contract every registered model family keeps, checked once per family.

A new family adds one entry to `CASES` (its test-sized config file); the test fails for a
registered family without one. Each family is checked for: init under a data x fsdp x tensor
mesh, one logical axis name per parameter dimension, sharded forward == single-device forward,
a jitted pretraining step that lowers the loss with every objective it declares (the objective
registry's contract: every (objective, family) pair), a model-directory round trip, and (where the
family has a converter) a Hugging Face state-dict round trip with the same outputs.
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from bertjax import objectives, sharding, spec
from bertjax.config import load_config
from bertjax.data import synthetic
from bertjax.interop import formats, model_dir
from bertjax.models import FAMILIES, Model, get_family, model_config
from bertjax.training.step import compile_steps
from tests.conftest import REPO

# family -> its test-sized config (the tiny configs the tests and benchmarks share)
CASES = {
    "bert": "configs/test.py",
    "electra": "configs/electra/test.py",
    "gpt": "configs/gpt/test.py",
    "rnn": "configs/rnn/test.py",
    "rnn_seq2seq": "configs/seq2seq/rnn_test.py",
    "marian": "configs/seq2seq/marian_test.py",
}
BATCH, LENGTH = 8, 16
DROPOUTS = ("hidden_dropout", "attention_dropout")


def test_every_registered_family_has_a_contract_case():
    assert set(CASES) == set(FAMILIES)


def _setup(name, mesh_sizes):
    config = load_config(REPO / CASES[name])
    config.model.update({k: 0.0 for k in DROPOUTS if k in config.model})  # outputs compared
    family, cfg = model_config(config.model)
    config.mesh.update(mesh_sizes)
    mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config.mesh)
    batch = synthetic.synthetic_batch(np.random.default_rng(0), BATCH, LENGTH, cfg.vocab_size)
    if "decoder_input_ids" in family.input_fields:  # encoder-decoders: translation pairs
        batch = synthetic.seq2seq_batch(np.random.default_rng(0), BATCH, LENGTH, 12, cfg.vocab_size)
    return family, cfg, config, mesh, rules, batch


def _inputs(family, batch):
    return {k: v for k, v in batch.items() if k in family.input_fields}


@pytest.mark.parametrize("name", sorted(CASES))
def test_init_under_a_mesh_has_logical_axes_and_shards_like_one_device(name):
    family, cfg, _, mesh, rules, batch = _setup(name, {"data": 2, "fsdp": 2, "tensor": 2})
    model = Model(family, cfg, model_dir.pretraining_heads(family))
    inputs = _inputs(family, batch)
    init_fn = lambda rng: model.init(rng, inputs)["params"]
    boxed = jax.eval_shape(init_fn, jax.random.key(0))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), leaf
        assert len(leaf.names) == leaf.value.ndim and all(isinstance(n, str) for n in leaf.names)
    init, _, _ = sharding.sharded_init(init_fn, mesh, rules)
    params = init(jax.random.key(0))
    assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(params))
    reference = jax.jit(lambda p: model.apply({"params": p}, inputs))(jax.device_get(params))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = jax.jit(lambda p, b: model.apply({"params": p}, b))(
            params, sharding.global_batch(inputs, mesh)
        )
    for key in reference:
        np.testing.assert_allclose(out[key], reference[key], atol=1e-5, err_msg=key)


# (objective, family): every pair the objective registry declares (bertjax.objectives.OBJECTIVES)
PAIRS = sorted((o, f) for o, entry in objectives.OBJECTIVES.items() for f in entry.families)


def test_every_family_trains_with_a_registered_objective_and_its_defaults_check():
    assert {f for _, f in PAIRS} == set(FAMILIES)
    for family in FAMILIES.values():  # the family's own defaults are a declared pair
        pair = (family.defaults["objective"], family.name)
        assert pair in PAIRS, pair


@pytest.mark.parametrize("objective_name,name", PAIRS)
def test_one_jitted_step_lowers_the_loss(objective_name, name, tmp_path):
    """The objective contract: each objective with each family it declares, built from the
    registry and the family's test config, passes the run checks and trains in one jitted step."""
    family, cfg, config, mesh, rules, batch = _setup(name, {"data": 1, "fsdp": 8, "tensor": 1})
    config.objective = objective_name
    spec.check(config)
    objective = objectives.make_objective(config, synthetic.write_vocab(cfg.vocab_size, tmp_path))
    model = Model(family, cfg, objective.heads)
    tx = optax.adam(1e-2)
    schedule = optax.constant_schedule(1e-2)
    steps = compile_steps(model, objective, tx, schedule, batch, mesh, rules)
    state = steps.init_state(jax.random.key(0))
    global_batch = sharding.global_batch(batch, mesh)

    def held_out_loss(params):  # the same masks before and after training
        sums = steps.eval_step(params, global_batch, jax.random.key(7))
        return objective.summarize(jax.device_get(sums))["loss"]

    before = held_out_loss(state.params)
    for _ in range(12):
        state, _ = steps.train_step(state, global_batch)
    assert held_out_loss(state.params) < before - 0.15


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_directory_and_hugging_face_round_trips_keep_the_outputs(name, tmp_path):
    family, cfg, *_, batch = _setup(name, {"data": -1, "fsdp": 1, "tensor": 1})
    batch = _inputs(family, batch)
    params = model_dir.init_params(cfg, seed=1)
    vocab = synthetic.write_vocab(cfg.vocab_size, tmp_path)
    model_dir.save_model(tmp_path / "model", params, cfg, vocab)
    model, loaded = formats.load_pretrained(tmp_path / "model")
    reference = Model(family, cfg, model_dir.pretraining_heads(family)).apply(
        {"params": params}, batch
    )
    out = model.apply({"params": loaded}, batch)
    for key in reference:
        np.testing.assert_allclose(out[key], reference[key], atol=1e-6, err_msg=key)
    if get_family(name).hf is None:
        return
    hf = get_family(name).converter()  # to the transformers state dict and back
    back, _ = hf.params_from_hf(hf.params_to_hf(params, cfg), cfg)
    out = model.apply({"params": back}, batch)
    for key in reference:
        np.testing.assert_allclose(out[key], reference[key], atol=1e-5, err_msg=key)
