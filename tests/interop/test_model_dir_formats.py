"""Contract of the model-directory-format registry (`bertjax.interop.formats.FORMATS`): every
registered format round-trips: written as that format writes it, detected as itself, loaded with
the same config and parameters. One tiny BERT, initialised once; no model is compiled per case."""

import dataclasses
import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from bertjax.data import synthetic
from bertjax.interop import finetuned_dir, formats, model_dir
from bertjax.models.bert import BertConfig
from bertjax.models.registry import family_of

CFG = BertConfig(
    vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
    max_position_embeddings=32,
)  # fmt: skip


@pytest.fixture(scope="module")
def pretrained():
    """Pretraining parameters (backbone, mlm and nsp heads) of `CFG`, on the host."""
    return model_dir.init_params(CFG, seed=1)


def _write_bertjax(path, params, vocab):
    model_dir.save_model(path, params, CFG, vocab)
    return params


def _write_finetuned(path, params, vocab):
    # a two-label classifier head has the NSP head's shapes: no second init is needed
    tuned = {"backbone": params["backbone"], "heads": {"classifier": params["heads"]["nsp"]}}
    task = {"kind": "classification", "max_len": 16}
    finetuned_dir.save_finetuned(
        path, tuned, CFG, vocab, None, kind="classification", label_names=["a", "b"], task=task
    )
    return tuned


def _write_workdir(path, params, vocab):
    path.mkdir()
    model_dir.write_model_files(path, CFG, vocab, {})
    with ocp.CheckpointManager((path / "checkpoints").absolute()) as manager:
        state = ocp.args.StandardSave({"params": params, "step": np.int32(3)})
        manager.save(3, args=ocp.args.Composite(state=state))
        manager.wait_until_finished()
    return params


def _write_legacy(path, params, vocab):
    """The layout before the model registry: no family, parameters under bert/mlm_head/nsp_head."""
    path.mkdir()
    document = {"format": "bertjax", "model": dataclasses.asdict(CFG)}
    (path / "config.json").write_text(json.dumps(document))
    (path / "vocab.txt").write_text(vocab.read_text())
    old = {"bert": params["backbone"], "mlm_head": params["heads"]["mlm"]}
    old["nsp_head"] = params["heads"]["nsp"]["dense"]
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save((path / "params").absolute(), old)
    checkpointer.wait_until_finished()
    return params


def _write_hf(path, params, vocab):
    path.mkdir()
    family_of(CFG).converter().write_hf_files(path, params, CFG, vocab, {})
    return params


# format name -> writer(path, params, vocab) -> the params the directory must load as
WRITERS = {
    "bertjax": _write_bertjax,
    "finetuned": _write_finetuned,
    "workdir": _write_workdir,
    "legacy": _write_legacy,
    "hf": _write_hf,
}


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_a_format_round_trips_through_detect_and_load(name, pretrained, tmp_path):
    vocab = synthetic.write_vocab(CFG.vocab_size, tmp_path)
    path = tmp_path / name
    want = WRITERS[name](path, pretrained, vocab)  # a new format needs a writer here
    assert formats.detect_format(path) == name
    config = formats.load_config(path)
    assert (config.hidden_size, config.num_layers, config.vocab_size) == (16, 2, 64)
    cfg, params = formats.load_params(path)
    assert type(cfg) is BertConfig
    want, got = dict(_leaves(want)), dict(_leaves(params))
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(value), err_msg=key)


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}/{k}")
    else:
        yield prefix, tree


def test_an_unknown_directory_is_named():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        formats.detect_format("/nonexistent/model")
