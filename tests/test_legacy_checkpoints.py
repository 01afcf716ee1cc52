"""Checkpoints written before the model registry (parameters under `bert`, `mlm_head`,
`nsp_head`, `classifier`, no `family` in config.json) still load, with the same outputs."""

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

from bertjax.interop import model_dir
from bertjax.models import Model
from bertjax.models.bert import BERT, BertConfig
from bertjax.objectives.mlm_nsp import MlmNsp, make_mask_fn
from bertjax.training import checkpoints, sharding
from bertjax.training.finetune import load_finetuned_params
from bertjax.training.step import compile_steps
from tests.test_families import COMMON

CFG = BertConfig(
    vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
    max_position_embeddings=32,
)  # fmt: skip
LEGACY_NAMES = {"mlm": ("mlm_head", False), "nsp": ("nsp_head", True)}


def _objective(cfg):
    """BERT's MLM+NSP objective on the synthetic vocabulary of `cfg`'s size."""
    ids = {"pad": COMMON.PAD, "cls": COMMON.CLS, "sep": COMMON.SEP, "mask": COMMON.MASK}
    data = {"max_predictions": 4, "mask_rate": 0.15, "whole_word_masking": False}
    return MlmNsp(make_mask_fn(data, COMMON.synthetic_vocab(cfg.vocab_size), ids), 4)


def _downgrade(tree, names=LEGACY_NAMES):
    """The pre-registry layout of every parameter tree inside `tree` (params, Adam moments)."""
    if isinstance(tree, dict) and "backbone" in tree:
        old = {"bert": tree["backbone"]}
        for name, head in tree.get("heads", {}).items():
            key, wrapped = names[name]
            old[key] = head["dense"] if wrapped else head
        return old
    if isinstance(tree, dict):
        return {k: _downgrade(v, names) for k, v in tree.items()}
    if hasattr(tree, "_fields"):  # optax states are namedtuples
        return type(tree)(*(_downgrade(v, names) for v in tree))
    if isinstance(tree, tuple | list):
        return type(tree)(_downgrade(v, names) for v in tree)
    return tree


def _write_legacy_model_dir(path, params, names=LEGACY_NAMES):
    path.mkdir(parents=True)
    document = {"format": "bertjax", "model": dataclasses.asdict(CFG)}
    (path / "config.json").write_text(json.dumps(document))
    COMMON.write_vocab(CFG.vocab_size, path)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save((path / "params").absolute(), _downgrade(params, names))
    checkpointer.wait_until_finished()


def test_a_pre_registry_model_directory_loads_with_the_same_outputs(tmp_path):
    params = model_dir.init_params(CFG, seed=2)
    _write_legacy_model_dir(tmp_path / "old", params)
    model, loaded = model_dir.load_pretrained(tmp_path / "old")
    batch = COMMON.synthetic_batch(np.random.default_rng(0), 2, 16, CFG.vocab_size)
    inputs = {k: batch[k] for k in BERT.fields_for(CFG)}
    want = Model(BERT, CFG, model_dir.PRETRAINING_HEADS).apply({"params": params}, inputs)
    got = model.apply({"params": loaded}, inputs)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_a_pre_registry_fine_tuned_tagger_gets_its_head_name(tmp_path):
    from bertjax.training.finetune import make_model

    ids = np.zeros((1, 4), np.int32)
    variables = make_model("tagging", CFG, 3).init(
        jax.random.key(0), {"input_ids": ids, "token_type_ids": ids, "attention_mask": ids + 1}
    )
    params = jax.device_get(nn.meta.unbox(variables["params"]))
    _write_legacy_model_dir(tmp_path / "run" / "model", params, {"tagger": ("classifier", True)})
    (tmp_path / "run" / "finetune.json").write_text(
        json.dumps({"kind": "tagging", "label_names": ["B-X", "I-X", "O"]})
    )
    _, loaded = load_finetuned_params(tmp_path / "run")
    assert set(loaded["heads"]) == {"tagger"}
    np.testing.assert_array_equal(
        loaded["heads"]["tagger"]["dense"]["kernel"], params["heads"]["tagger"]["dense"]["kernel"]
    )


def test_a_pre_registry_training_checkpoint_resumes_with_the_same_state(tmp_path):
    mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 1})
    rules = sharding.logical_rules(
        {"logical_axis_rules": [("embed", "fsdp"), ("act_batch", ("data", "fsdp"))]}
    )
    batch = COMMON.synthetic_batch(np.random.default_rng(0), 8, 16, CFG.vocab_size)
    objective = _objective(CFG)
    model = Model(BERT, CFG, objective.heads)
    tx = optax.adamw(1e-3)
    steps = compile_steps(model, objective, tx, optax.constant_schedule(1e-3), batch, mesh, rules)
    state, _ = steps.train_step(
        steps.init_state(jax.random.key(0)), sharding.global_batch(batch, mesh)
    )
    host = jax.device_get(state)
    old = host.replace(params=_downgrade(host.params), opt_state=_downgrade(host.opt_state))
    manager = checkpoints.checkpoint_manager(tmp_path, {"keep": 1, "async_save": False})
    checkpoints.save_train_state(manager, 1, old, 8)
    manager.wait_until_finished()
    restored, position = checkpoints.restore_train_state(
        manager, steps.state_shardings, steps.abstract_state
    )
    assert position == {"step": 1, "examples_consumed": 8}
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(host), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(steps.state_shardings), strict=True):
        assert a.sharding == b
