"""Model, config and sharding: shapes, dtypes, logical axes, real sharding, sharded == unsharded."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import sharding
from bertjax.config import load_config
from bertjax.interop.model_dir import PRETRAINING_HEADS
from bertjax.models import Model
from bertjax.models.bert import BERT, BertConfig, bert_model_config
from bertjax.models.layers import attention, segment_mask
from tests.conftest import REPO

TEST_CONFIG = REPO / "configs" / "test.py"


def _config(**overrides) -> BertConfig:
    return dataclasses.replace(bert_model_config(load_config(TEST_CONFIG).model), **overrides)


def _pretraining_model(cfg):
    return Model(BERT, cfg, PRETRAINING_HEADS)


def _encoder_model(cfg):
    return Model(BERT, cfg)


def _batch(ids, types, mask, **extra):
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, **extra}


def _inputs(batch=8, length=16, vocab=128, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, length)).astype(np.int32)
    lengths = rng.integers(3, length + 1, size=batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    types = ((np.arange(length)[None] >= lengths[:, None] // 2) & (mask > 0)).astype(np.int32)
    return ids * mask, types, mask


def _init(model, ids, types, mask, **kw):
    return model.init(
        jax.random.key(0), {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}, **kw
    )


def test_forward_shapes_and_dtypes():
    cfg = _config()
    ids, types, mask = _inputs()
    model = _pretraining_model(cfg)
    params = nn.meta.unbox(_init(model, ids, types, mask)["params"])
    positions = np.tile(np.arange(4, dtype=np.int32), (8, 1))
    out = model.apply(
        {"params": params},
        {
            "input_ids": ids,
            "token_type_ids": types,
            "attention_mask": mask,
            "masked_positions": positions,
        },
    )
    assert out["sequence_output"].shape == (8, 16, 32)
    assert out["pooled_output"].shape == (8, 32)
    assert out["mlm_logits"].shape == (8, 4, 128)
    assert out["nsp_logits"].shape == (8, 2)
    full = model.apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )
    assert full["mlm_logits"].shape == (8, 16, 128)
    # The gathered head equals the full head at the gathered positions.
    np.testing.assert_allclose(out["mlm_logits"], full["mlm_logits"][:, :4], atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    cfg = _config(dtype="bfloat16")
    ids, types, mask = _inputs()
    model = _pretraining_model(cfg)
    params = nn.meta.unbox(_init(model, ids, types, mask)["params"])
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    out = model.apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )
    assert out["sequence_output"].dtype == jnp.bfloat16
    assert out["mlm_logits"].dtype == jnp.float32
    ref = _pretraining_model(_config()).apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )
    assert np.abs(np.asarray(out["nsp_logits"]) - np.asarray(ref["nsp_logits"])).max() < 0.05


def test_padding_does_not_change_real_tokens():
    cfg = _config()
    ids, types, mask = _inputs(batch=1)
    n = int(mask.sum())
    model = _encoder_model(cfg)
    params = nn.meta.unbox(_init(model, ids, types, mask)["params"])
    padded = model.apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )["sequence_output"][:, :n]
    short = model.apply({"params": params}, _batch(ids[:, :n], types[:, :n], mask[:, :n]))
    np.testing.assert_allclose(padded, short["sequence_output"], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_heads_first_attention_matches_jax_dot_product_attention(causal):
    q, k, v = (jax.random.normal(jax.random.key(i), (3, 8, 4, 16)) for i in range(3))
    # An ordinary row, a right-padded one and a packed one (segments 1, 2, then padding).
    mask = jnp.array([[1] * 8, [1] * 5 + [0] * 3, [1] * 3 + [2] * 4 + [0]])
    ref = jax.nn.dot_product_attention(
        q, k, v, mask=segment_mask(mask, causal=causal), implementation="xla"
    )
    ours = attention(q, k, v, mask, implementation="xla", causal=causal)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # Dropout with a rate of ~0 keeps everything: the same function.
    kept = attention(
        q,
        k,
        v,
        mask,
        implementation="xla",
        causal=causal,
        dropout_rate=1e-12,
        dropout_rng=jax.random.key(0),
    )
    np.testing.assert_allclose(kept, ref, atol=1e-5)


@pytest.mark.parametrize("scan", [False, True])
def test_every_parameter_has_one_logical_axis_per_dimension(scan):
    cfg = _config(scan_layers=scan)
    ids, types, mask = _inputs()
    boxed = jax.eval_shape(lambda: _init(_pretraining_model(cfg), ids, types, mask))["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert len(leaves) > 20
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), leaf
        assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)
        assert all(isinstance(n, str) for n in leaf.names)
    if scan:
        kernel = boxed["backbone"]["encoder"]["layers"]["attention"]["query"]["kernel"]
        assert kernel.names == ("layers", "embed", "heads", "kv")
        assert kernel.value.shape == (2, 32, 4, 8)


def _sharded_setup(cfg, mesh_sizes):
    config = load_config(TEST_CONFIG)
    config.mesh.update(mesh_sizes)
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.logical_rules(config.mesh)
    model = _pretraining_model(cfg)
    ids, types, mask = _inputs()
    init_fn = lambda rng: model.init(
        rng, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )["params"]
    init, _, shardings = sharding.sharded_init(init_fn, mesh, rules)
    params = init(jax.random.key(0))
    return model, params, shardings, mesh, rules, (ids, types, mask)


@pytest.mark.parametrize("scan", [False, True])
def test_large_weights_are_split_on_a_data_fsdp_tensor_mesh(scan):
    cfg = _config(scan_layers=scan)
    _, params, _, mesh, _, _ = _sharded_setup(cfg, {"data": 2, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    word = params["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    layers = params["backbone"]["encoder"]["layers" if scan else "layer_0"]
    wi = layers["mlp"]["wi"]["kernel"]
    query = layers["attention"]["query"]["kernel"]
    for array in (word, wi, query):
        shard = array.addressable_shards[0].data
        # fsdp x tensor = 4-way split of each large weight, replicated only over "data".
        assert shard.size * 4 == array.size, (array.shape, shard.shape)
        assert not array.sharding.is_fully_replicated
    assert word.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")


def test_sharded_forward_equals_single_device_forward():
    cfg = _config()
    model, params, _, mesh, rules, (ids, types, mask) = _sharded_setup(
        cfg, {"data": 2, "fsdp": 2, "tensor": 2}
    )
    host_params = jax.device_get(params)
    reference = jax.jit(
        lambda p: model.apply(
            {"params": p}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        )
    )(host_params)
    batch = sharding.global_batch({"ids": ids, "types": types, "mask": mask}, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = jax.jit(
            lambda p, b: model.apply(
                {"params": p},
                {"input_ids": b["ids"], "token_type_ids": b["types"], "attention_mask": b["mask"]},
            )
        )(params, batch)
    assert len(out["sequence_output"].sharding.device_set) == 8
    for name in ("sequence_output", "pooled_output", "mlm_logits", "nsp_logits"):
        np.testing.assert_allclose(out[name], reference[name], atol=1e-5, err_msg=name)


def test_scan_and_unrolled_layers_compute_the_same_function():
    ids, types, mask = _inputs()
    unrolled = _pretraining_model(_config())
    params = nn.meta.unbox(_init(unrolled, ids, types, mask)["params"])
    layers = [params["backbone"]["encoder"].pop(f"layer_{i}") for i in range(2)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)
    scanned_params = jax.tree_util.tree_map(lambda x: x, params)
    scanned_params["backbone"]["encoder"] = {"layers": stacked}
    params["backbone"]["encoder"] = {f"layer_{i}": layer for i, layer in enumerate(layers)}
    a = unrolled.apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )
    for policy in ("none", "full"):
        b = _pretraining_model(_config(scan_layers=True, remat_policy=policy)).apply(
            {"params": scanned_params},
            {"input_ids": ids, "token_type_ids": types, "attention_mask": mask},
        )
        np.testing.assert_allclose(a["mlm_logits"], b["mlm_logits"], atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 30}, "config.model.hidden_size=30"),
        ({"attention_impl": "flash"}, "config.model.attention_impl='flash'"),
        ({"attention_impl": "cudnn"}, "config.model.attention_dropout"),
        (
            {"attention_impl": "cudnn", "attention_dropout": 0.0, "dtype": "float32"},
            "config.model.dtype='float32'",
        ),
        ({"remat_policy": "some"}, "config.model.remat_policy"),
        ({"dtype": "int8"}, "config.model.dtype"),
    ],
)
def test_invalid_model_config_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _config(**overrides)


def test_mesh_that_does_not_match_the_device_count_names_the_fields():
    config = load_config(TEST_CONFIG, ["--config.mesh.data=3", "--config.mesh.fsdp=2"])
    with pytest.raises(
        ValueError, match=r"config.mesh: data=3 x fsdp=2 x tensor=1 = 6 devices, but 8"
    ):
        sharding.make_mesh(config.mesh)
    config.mesh.data = -1
    config.mesh.fsdp = 3
    with pytest.raises(ValueError, match="not divisible"):
        sharding.make_mesh(config.mesh)
    config.mesh.fsdp = 4
    assert dict(sharding.make_mesh(config.mesh).shape) == {"data": 2, "fsdp": 4, "tensor": 1}


def test_config_overrides_are_typed_and_unknown_fields_rejected():
    config = load_config(
        TEST_CONFIG,
        [
            "--config.model.num_layers=3",
            "--config.optim.learning_rate=2e-5",
            "--config.model.dtype=bfloat16",
            "--config.model.scan_layers=True",
            "--config.optim.weight_decay=0",
        ],
    )
    assert config.model.num_layers == 3 and config.model.scan_layers is True
    assert config.optim.learning_rate == 2e-5 and config.model.dtype == "bfloat16"
    assert isinstance(config.optim.weight_decay, float)
    with pytest.raises(ValueError, match="unknown field; known fields here: .*num_heads"):
        load_config(TEST_CONFIG, ["--config.model.num_layer=3"])
    with pytest.raises(ValueError, match="cannot parse as int"):
        load_config(TEST_CONFIG, ["--config.model.num_layers=two"])
    with pytest.raises(ValueError, match="unknown fields"):
        bert_model_config({**load_config(TEST_CONFIG).model.to_dict(), "hiden_size": 3})


@pytest.mark.parametrize("name", ["tiny", "mini", "small", "medium", "base", "large"])
def test_size_configs_build_the_published_shapes(name):
    sizes = {
        "tiny": (2, 128, 2),
        "mini": (4, 256, 4),
        "small": (4, 512, 8),
        "medium": (8, 512, 8),
        "base": (12, 768, 12),
        "large": (24, 1024, 16),
    }
    cfg = bert_model_config(load_config(REPO / "configs" / f"{name}.py").model)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == sizes[name]
    assert cfg.intermediate_size == 4 * cfg.hidden_size
    if name == "base":
        ids = jnp.zeros((1, 8), jnp.int32)
        shapes = jax.eval_shape(
            lambda: _pretraining_model(cfg).init(
                jax.random.key(0), {"input_ids": ids, "token_type_ids": ids, "attention_mask": ids}
            )
        )
        n = sum(x.size for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes)))
        # BERT-base with pretraining heads: 110M encoder + MLM transform/bias + NSP.
        assert 109_000_000 < n < 111_000_000


def test_packed_row_equals_its_instances_run_alone():
    """Packing without cross-contamination: segments attend only within themselves, positions
    restart per segment, and NSP reads each instance's [CLS]."""
    cfg = _config()
    rng = np.random.default_rng(3)
    lengths, length = (7, 5, 3), 16
    ids = [rng.integers(5, 128, n).astype(np.int32) for n in lengths]
    types = [(np.arange(n) >= n // 2).astype(np.int32) for n in lengths]
    alone = np.zeros((3, length), np.int32)
    alone_types, alone_mask = np.zeros_like(alone), np.zeros_like(alone)
    packed = np.zeros((1, length), np.int32)
    packed_types, segments = np.zeros_like(packed), np.zeros_like(packed)
    starts = np.cumsum([0, *lengths[:-1]])
    for i, (n, start) in enumerate(zip(lengths, starts, strict=True)):
        alone[i, :n], alone_types[i, :n], alone_mask[i, :n] = ids[i], types[i], 1
        packed[0, start : start + n], packed_types[0, start : start + n] = ids[i], types[i]
        segments[0, start : start + n] = i + 1
    model = _pretraining_model(cfg)
    params = nn.meta.unbox(_init(model, alone, alone_types, alone_mask)["params"])
    one = model.apply(
        {"params": params},
        {"input_ids": alone, "token_type_ids": alone_types, "attention_mask": alone_mask},
    )
    many = model.apply(
        {"params": params},
        {
            "input_ids": packed,
            "token_type_ids": packed_types,
            "attention_mask": segments,
            "nsp_positions": starts[None],
        },
    )
    for i, (n, start) in enumerate(zip(lengths, starts, strict=True)):
        np.testing.assert_allclose(
            many["sequence_output"][0, start : start + n], one["sequence_output"][i, :n], atol=2e-5
        )
    np.testing.assert_allclose(many["nsp_logits"][0], one["nsp_logits"], atol=2e-5)
    # Without the segments the instances would see each other: the check above is not vacuous.
    mixed = model.apply(
        {"params": params}, _batch(packed, packed_types, (segments > 0).astype(np.int32))
    )
    assert np.abs(mixed["sequence_output"][0, :7] - one["sequence_output"][0, :7]).max() > 1e-3
