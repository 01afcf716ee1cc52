"""The `rnn` family: torch parity (packed bidirectional LSTM/GRU), padding invariance, a training
step, logical axes of every parameter, sharded == unsharded."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax import sharding
from bertjax.config import load_config
from bertjax.models.rnn import (
    POOLINGS,
    RnnBackbone,
    RnnConfig,
    RnnEncoder,
    forward_flops_per_sequence,
    params_from_torch,
    reverse_index,
)
from tests.conftest import REPO

LENGTHS = np.array([9, 1, 4, 7, 2, 9, 5, 3])  # a length-1 row and full-length rows
NEW_AXES = {"rnn_in", "rnn_gates", "rnn_hidden", "rnn_state"}
# What configs should add to config.mesh.logical_axis_rules for this family.
RNN_RULES = (("rnn_in", "fsdp"), ("rnn_gates", None), ("rnn_hidden", None), ("rnn_state", None))


def _config(**overrides) -> RnnConfig:
    sizes = dict(vocab_size=50, hidden_size=24, embedding_size=24, rnn_size=16, num_layers=2)
    return RnnConfig(**{**sizes, **overrides})


def _inputs(length=9, vocab=50, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(length)[None] < LENGTHS[:, None]).astype(np.int32)
    ids = rng.integers(5, vocab, size=mask.shape).astype(np.int32) * mask
    types = ((np.arange(length)[None] >= LENGTHS[:, None] // 2) & (mask > 0)).astype(np.int32)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def _init(cfg: RnnConfig, inputs) -> dict:
    """Parameters for `cfg` (a fresh dict tree; arrays shared), made once per parameter shape:
    compiling an init (its random draws) costs seconds on a CPU, pooling and dropout add none."""
    params = _cached_init(
        dataclasses.replace(cfg, pooling="final", hidden_dropout=0.0), inputs["input_ids"].shape
    )
    return jax.tree.map(lambda x: x, params)


@functools.cache
def _cached_init(cfg: RnnConfig, shape: tuple[int, int]) -> dict:
    inputs = {"input_ids": np.zeros(shape, np.int32), "attention_mask": np.ones(shape, np.int32)}
    init = jax.jit(RnnBackbone(cfg).init)  # eager init would run the scans op by op
    return nn.meta.unbox(init(jax.random.key(0), inputs)["params"])


@functools.cache
def _forward(cfg: RnnConfig):
    """The jitted backbone (params, inputs) -> its array outputs, one compile per config."""
    model = RnnBackbone(cfg)

    def forward(params, inputs):
        out = model.apply({"params": params}, inputs)
        return {"sequence_output": out["sequence_output"], "pooled_output": out["pooled_output"]}

    return jax.jit(forward)


def _torch_run(cfg: RnnConfig, x: np.ndarray, lengths: np.ndarray):
    """A torch bidirectional LSTM/GRU on packed rows: (state dict as numpy, outputs [batch,
    length, 2 rnn] zero-padded, last layer's h_n as [batch, 2 rnn])."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cfg.cell]
    rnn = kind(x.shape[-1], cfg.rnn_size, cfg.num_layers, batch_first=True, bidirectional=True)
    pack = torch.nn.utils.rnn.pack_padded_sequence
    packed = pack(torch.from_numpy(x), torch.from_numpy(lengths), True, enforce_sorted=False)
    with torch.no_grad():
        out, state = rnn(packed)
    h_n = state[0] if cfg.cell == "lstm" else state
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, True, total_length=x.shape[1])
    final = torch.cat([h_n[-2], h_n[-1]], dim=-1)
    weights = {k: v.numpy() for k, v in rnn.state_dict().items()}
    return weights, out.numpy(), final.numpy()


def _torch_pool(out: np.ndarray, final: np.ndarray, mask: np.ndarray, pooling: str):
    real = mask[..., None] > 0
    if pooling == "final":
        return final
    if pooling == "mean":
        return out.sum(axis=1) / real.sum(axis=1)
    return np.where(real, out, -np.inf).max(axis=1)


@pytest.mark.interop
@pytest.mark.parametrize("cell,layers", [("lstm", 2), ("lstm", 3), ("gru", 2), ("gru", 3)])
def test_encoder_matches_torch_packed_bidirectional_rnn(cell, layers):
    cfg = _config(cell=cell, num_layers=layers)
    inputs = _inputs()
    x = np.random.default_rng(1).normal(size=(*inputs["input_ids"].shape, 24))
    x = x.astype(np.float32)
    weights, ref_out, ref_final = _torch_run(cfg, x, LENGTHS)
    params = params_from_torch(weights, cfg)
    out, final = RnnEncoder(cfg).apply(
        {"params": params}, x, inputs["attention_mask"], deterministic=True
    )
    out_err = np.abs(np.asarray(out) - ref_out).max()
    final_err = np.abs(np.asarray(final) - ref_final).max()
    print(f"{cell} x{layers}: outputs max|diff| {out_err:.2e}, final states {final_err:.2e}")
    assert out_err < 1e-5 and final_err < 1e-5
    assert np.all(np.asarray(out)[inputs["attention_mask"] == 0] == 0)


@pytest.mark.interop
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backbone_outputs_and_poolings_match_torch(cell):
    inputs = _inputs()
    base = _config(cell=cell, num_layers=3)
    params = _init(base, inputs)
    table, types = params["word_embeddings"]["embedding"], params["token_type_embeddings"]
    x = np.asarray(table)[inputs["input_ids"]] + np.asarray(types)[inputs["token_type_ids"]]
    weights, ref_out, ref_final = _torch_run(base, x, LENGTHS)
    params["encoder"] = params_from_torch(weights, base)
    kernel, bias = (np.asarray(params["projection"][k]) for k in ("kernel", "bias"))
    for pooling in POOLINGS:
        cfg = dataclasses.replace(base, pooling=pooling)
        out = _forward(cfg)(params, inputs)
        pooled = _torch_pool(ref_out, ref_final, inputs["attention_mask"], pooling)
        seq_err = np.abs(np.asarray(out["sequence_output"]) - (ref_out @ kernel + bias)).max()
        pool_err = np.abs(np.asarray(out["pooled_output"]) - (pooled @ kernel + bias)).max()
        print(f"{cell} {pooling}: sequence max|diff| {seq_err:.2e}, pooled {pool_err:.2e}")
        assert seq_err < 1e-5 and pool_err < 1e-5, pooling
        assert out["sequence_output"].shape == (8, 9, 24)
        assert out["pooled_output"].shape == (8, 24)


def test_bfloat16_compute_keeps_float32_params_and_state():
    inputs = _inputs()
    params = _init(_config(), inputs)
    out = _forward(_config(dtype="bfloat16"))(params, inputs)
    ref = _forward(_config())(params, inputs)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert out["sequence_output"].dtype == jnp.bfloat16
    err = np.abs(np.asarray(out["pooled_output"], np.float32) - np.asarray(ref["pooled_output"]))
    assert err.max() < 0.05


def test_reverse_index_reverses_each_row_within_its_length():
    rev = np.asarray(reverse_index(jnp.array([3, 1, 4]), 4))
    np.testing.assert_array_equal(rev, [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_tokens_change_nothing(cell, pooling):
    cfg = _config(cell=cell, pooling=pooling)
    inputs = _inputs()
    params = _init(cfg, inputs)
    pad = inputs["attention_mask"] == 0
    noisy = dict(inputs)
    noisy["input_ids"] = np.where(pad, np.random.default_rng(2).integers(5, 50, pad.shape), 0)
    noisy["input_ids"] = (noisy["input_ids"] + inputs["input_ids"]).astype(np.int32)
    noisy["token_type_ids"] = np.where(pad, 1, inputs["token_type_ids"]).astype(np.int32)
    assert not np.array_equal(noisy["input_ids"], inputs["input_ids"])
    forward = _forward(cfg)
    clean, dirty = (forward(params, b) for b in (inputs, noisy))
    for name in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(dirty[name], clean[name], atol=1e-6, err_msg=name)
    # The real tokens of a row do not see its padding at all: the same row unpadded agrees.
    n = int(LENGTHS[2])
    short = {k: v[2:3, :n] for k, v in inputs.items()}
    alone = forward(params, short)
    np.testing.assert_allclose(
        alone["sequence_output"][0], clean["sequence_output"][2, :n], atol=1e-6
    )
    np.testing.assert_allclose(alone["pooled_output"][0], clean["pooled_output"][2], atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_jitted_adam_step_with_dropout_lowers_a_toy_loss(cell):
    cfg = _config(cell=cell, hidden_dropout=0.1, pooling="mean")
    inputs = _inputs()
    params = _init(cfg, inputs)
    model = RnnBackbone(cfg)
    target = jax.random.normal(jax.random.key(3), (8, cfg.hidden_size))

    def loss_fn(p, rng=None):
        if rng is None:
            out = model.apply({"params": p}, inputs)
        else:
            out = model.apply({"params": p}, inputs, deterministic=False, rngs={"dropout": rng})
        seq = out["sequence_output"] * inputs["attention_mask"][..., None]
        return jnp.mean((out["pooled_output"] - target) ** 2) + jnp.mean(seq**2)

    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(p, opt_state, rng):
        loss, grads = jax.value_and_grad(loss_fn)(p, rng)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, grads

    new_params, _, grads = step(params, optimizer.init(params), jax.random.key(4))
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert len(flat) == 2 + 2 + 2 * 8  # embeddings, projection, 2 layers x 2 directions x 4
    for path, g in flat:
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, jax.tree_util.keystr(path)
    evaluate = jax.jit(loss_fn)
    before, after = float(evaluate(params)), float(evaluate(new_params))
    assert after < before, (before, after)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_parameter_has_one_logical_axis_per_dimension(cell):
    cfg = _config(cell=cell)
    inputs = _inputs()
    boxed = jax.eval_shape(lambda: RnnBackbone(cfg).init(jax.random.key(0), inputs))["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert len(leaves) == 4 + 2 * 8
    names = set()
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), leaf
        assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)
        assert all(isinstance(n, str) for n in leaf.names)
        names.update(leaf.names)
    specs = jax.tree_util.tree_leaves(nn.get_partition_spec(boxed))
    assert all(None not in spec for spec in specs)
    assert names == NEW_AXES | {"vocab", "embed", "token_type"}
    w_hh = boxed["encoder"]["layer_1"]["backward_w_hh"]
    assert w_hh.names == ("rnn_state", "rnn_gates", "rnn_hidden")
    assert w_hh.value.shape == (16, cfg.num_gates, 16)


@pytest.mark.parametrize("mesh_sizes", [{"data": 8}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_sharded_forward_equals_single_device_forward(mesh_sizes):
    cfg = _config(pooling="max")
    config = load_config(REPO / "configs" / "test.py")
    config.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, **mesh_sizes})
    mesh = sharding.make_mesh(config.mesh)
    rules = (*sharding.logical_rules(config.mesh), *RNN_RULES)
    inputs = _inputs()
    host_params = _init(cfg, inputs)
    boxed = jax.eval_shape(lambda: RnnBackbone(cfg).init(jax.random.key(0), inputs)["params"])
    params = sharding.host_to_global(host_params, sharding.mesh_shardings(boxed, mesh, rules))
    reference = _forward(cfg)(host_params, inputs)
    batch = sharding.global_batch(inputs, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = jax.jit(_forward(cfg).__wrapped__)(params, batch)  # traced under the rules
    assert len(out["sequence_output"].sharding.device_set) == 8
    assert out["sequence_output"].addressable_shards[0].data.shape[0] < 8  # the batch is split
    for name in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(out[name], reference[name], atol=1e-5, err_msg=name)


def test_flops_count_the_matmuls():
    cfg = _config(cell="gru", num_layers=2)  # G=3, R=16, E=H=24
    per_token = 2 * 2 * 3 * 16 * (24 + 16) + 2 * 2 * 3 * 16 * (32 + 16) + 2 * 32 * 24
    assert forward_flops_per_sequence(cfg, 10) == 10 * per_token + 2 * 32 * 24


@pytest.mark.parametrize(
    "field,value", [("cell", "rnn"), ("pooling", "cls"), ("rnn_size", 0), ("hidden_dropout", 1.0)]
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"config.model.{field}="):
        _config(**{field: value})
