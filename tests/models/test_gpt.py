"""The GPT family: model, causal-LM objective, block data, byte-level BPE, generation, interop."""

import functools
import json
import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import cli
from bertjax.data import tokenizer as tok
from bertjax.data.instances.lm_blocks import build_blocks
from bertjax.data.prepare import prepare
from bertjax.data.source import PretrainingSource
from bertjax.data.tokenizer_kinds import byte_bpe
from bertjax.interop import formats, model_dir
from bertjax.models import Model, get_family, head_spec
from bertjax.models.decoding import filter_logits, generate, left_pad
from bertjax.models.gpt import GptConfig
from bertjax.objectives.causal_lm import CausalLm, next_token_targets

GPT = get_family("gpt")
TINY = dict(
    vocab_size=101,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    eos_token_id=0,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    initializer_range=0.3,  # large, so that greedy decoding of a random model is not trivial
)


def tiny(**overrides) -> GptConfig:
    return GptConfig(**{**TINY, **overrides})


@functools.cache
def jitted(fn):
    return jax.jit(fn)


def init(cfg, heads=None, length=8):
    model = Model(GPT, cfg, tuple(heads or (head_spec("lm"),)))
    x = {
        "input_ids": jnp.ones((2, length), jnp.int32),
        "attention_mask": jnp.ones((2, length), jnp.int32),
    }
    return model, jitted(model.init)(jax.random.key(0), x)["params"]


def logits(model, params, ids, mask=None):
    mask = np.ones_like(ids) if mask is None else mask
    inputs = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
    return np.asarray(jitted(model.apply)({"params": params}, inputs)["lm_logits"])


# ------------------------------------------------------------------------------------ model


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="config.model.eos_token_id"):
        tiny(eos_token_id=101)
    with pytest.raises(ValueError, match="config.model.hidden_size"):
        tiny(hidden_size=30)


@pytest.mark.parametrize("scan", [False, True])
def test_every_param_has_one_logical_axis_per_dim(scan):
    _, boxed = init(tiny(scan_layers=scan))
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(p, nn.Partitioned) for p in leaves)
    assert all(len(p.names) == p.value.ndim for p in leaves)
    names = {p.names for p in leaves}
    assert ("vocab", "embed") in names and ("position", "embed") in names
    assert (
        ("layers", "embed", "heads", "kv") in names if scan else ("embed", "heads", "kv") in names
    )


def test_causal_left_padding_and_scan_layout():
    cfg = tiny()
    model, params = init(cfg)
    params = nn.meta.unbox(params)
    ids = np.random.default_rng(0).integers(1, 101, (1, 10))
    base = logits(model, params, ids)
    changed = ids.copy()
    changed[0, 6:] = 7  # the future does not change the past
    np.testing.assert_allclose(logits(model, params, changed)[0, :6], base[0, :6], atol=1e-5)
    padded = np.concatenate([np.zeros((1, 3), ids.dtype), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 3), int), np.ones_like(ids)], axis=1)
    np.testing.assert_allclose(logits(model, params, padded, mask)[0, 3:], base[0], atol=1e-5)
    scan_cfg, scan_params = model_dir.relayout(cfg, params, True)
    scan_model = Model(GPT, scan_cfg, (head_spec("lm"),))
    np.testing.assert_allclose(logits(scan_model, scan_params, ids), base, atol=1e-5)


def test_pooled_output_is_the_last_real_token_and_classifier_runs():
    model, params = init(tiny(), heads=(head_spec("lm"), head_spec("classifier", num_labels=3)))
    ids = np.arange(1, 9)[None].repeat(2, 0)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    out = model.apply({"params": params}, {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(out["pooled_output"][0], out["sequence_output"][0, 7], atol=1e-6)
    np.testing.assert_allclose(out["pooled_output"][1], out["sequence_output"][1, 4], atol=1e-6)
    assert out["logits"].shape == (2, 3)


def test_forward_flops_count_attention_as_computed():
    cfg = tiny(num_layers=1)
    full = GPT.forward_flops(cfg, 16)
    h = cfg.hidden_size
    weights = 2 * 16 * (4 * h * h + 2 * h * cfg.intermediate_size)
    assert full == weights + 4 * 16 * 16 * h
    cudnn = GPT.forward_flops(tiny(num_layers=1, attention_impl="cudnn", dtype="bfloat16"), 16)
    assert cudnn == weights + 2 * 16 * 16 * h


# -------------------------------------------------------------------------------- objective


def test_next_token_targets_mask_padding_and_document_boundaries():
    batch = {
        "input_ids": jnp.array([[5, 6, 0, 7, 8, 0, 0]]),
        "attention_mask": jnp.array([[1, 1, 1, 2, 2, 0, 0]]),  # two documents, then padding
    }
    labels, weights = next_token_targets(batch)
    np.testing.assert_array_equal(labels, [[6, 0, 7, 8, 0, 0]])
    np.testing.assert_array_equal(weights, [[1, 1, 0, 1, 0, 0]])


def test_causal_lm_sums_and_summary():
    model, params = init(tiny())
    params = nn.meta.unbox(params)
    batch = {
        "input_ids": jnp.arange(2 * 8).reshape(2, 8) % 101,
        "attention_mask": jnp.ones((2, 8), jnp.int32),
    }
    objective = CausalLm()
    sums = jax.device_get(objective.sums(model, params, batch, None))
    assert sums["lm_count"] == 14
    out = objective.summarize(sums)
    assert out["perplexity"] == pytest.approx(np.exp(out["loss"]))
    ref = jax.nn.log_softmax(logits(model, params, np.asarray(batch["input_ids"]))[:, :-1])
    nll = -np.take_along_axis(ref, np.asarray(batch["input_ids"])[:, 1:, None], -1).mean()
    assert out["lm_loss"] == pytest.approx(float(nll), rel=1e-5)


# ------------------------------------------------------------------------------------- data


def test_build_blocks_concatenates_with_eos_and_pads_the_last():
    out = build_blocks([[1, 2, 3], [4], [5, 6]], block_len=4, eos_id=9, ids_dtype=np.uint16)
    np.testing.assert_array_equal(out["input_ids"], [[1, 2, 3, 9], [4, 9, 5, 6], [9, 9, 9, 9]])
    np.testing.assert_array_equal(out["lengths"], [4, 4, 1])
    starts = np.unpackbits(out["document_starts"], axis=1, count=4)
    np.testing.assert_array_equal(starts, [[1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from bertjax.data.corpus import write_builtin_corpus

    return write_builtin_corpus(tmp_path_factory.mktemp("corpus"))[:30]


@pytest.fixture(scope="module")
def bpe(corpus, tmp_path_factory):
    return byte_bpe.train_byte_bpe(corpus, tmp_path_factory.mktemp("bpe"), vocab_size=400)


def test_lm_blocks_source_and_document_segments(corpus, bpe, tmp_path):
    meta = prepare(
        corpus,
        bpe,
        tmp_path,
        max_seq_len=32,
        instances="lm_blocks",
        num_workers=0,
        documents_per_file=True,
        eval_fraction=0.1,
    )
    assert meta["instances"] == "lm_blocks" and meta["special_ids"]["eos"] == 0
    plain = PretrainingSource(tmp_path, "train", vocab_path=bpe)
    docs = PretrainingSource(tmp_path, "train", document_attention=True)
    assert set(plain[0]) == {"input_ids", "attention_mask"} and plain[0]["input_ids"].shape == (32,)
    # documents are separated by <|endoftext|>: the first block with one inside
    index = next(i for i in range(len(plain)) if 0 in plain[i]["input_ids"][:-1])
    item, segmented = plain[index], docs[index]
    eos = np.flatnonzero(item["input_ids"] == 0)
    np.testing.assert_array_equal(segmented["attention_mask"] > 0, item["attention_mask"] > 0)
    first = eos[0]  # the <|endoftext|> ends its document's segment; the next one starts after
    assert segmented["attention_mask"][first] == segmented["attention_mask"][0]
    assert segmented["attention_mask"][first + 1] == segmented["attention_mask"][0] + 1
    total = sum(int(plain[i]["attention_mask"].sum()) for i in range(len(plain)))
    assert total == meta["splits"]["train"]["num_tokens"]


# -------------------------------------------------------------------------------- tokenizer


@pytest.mark.interop
def test_byte_bpe_ids_equal_gpt2_tokenizer_fast(corpus, bpe):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(bpe.parent))
    ours = tok.load_tokenizer(bpe)
    texts = [pathlib.Path(p).read_text() for p in corpus[:5]]
    texts += ["Hello  world<|endoftext|> naïve café 한국어 \n\n  x", " leading space", ""]
    for text in texts:
        assert ours.encode(text).ids == hf(text)["input_ids"]
    assert tok.read_vocab(bpe)[0] == tok.END_OF_TEXT and len(tok.read_vocab(bpe)) == 400


def test_byte_bpe_training_is_deterministic(corpus, bpe, tmp_path):
    again = byte_bpe.train_byte_bpe(corpus, tmp_path, vocab_size=400)
    for name in (tok.BPE_VOCAB_NAME, tok.MERGES_NAME):
        assert (again.parent / name).read_bytes() == (bpe.parent / name).read_bytes()


# ------------------------------------------------------------------------------- generation


def test_cached_decoding_equals_uncached():
    cfg = tiny()
    model, params = init(cfg)
    params = nn.meta.unbox(params)
    prompts = [[5, 6, 7, 8], [9, 10]]
    new = generate(
        model, params, prompts, eos_id=cfg.eos_token_id, max_new_tokens=8, temperature=0.0
    )
    for prompt, tokens in zip(prompts, new, strict=True):
        seq = list(prompt)
        for _ in range(8):  # uncached: the whole sequence again for every token
            token = int(np.argmax(logits(model, params, np.array([seq]))[0, -1]))
            if token == cfg.eos_token_id:
                break
            seq.append(token)
        assert tokens == seq[len(prompt) :]
    assert len(set(new[0])) > 1  # the check is not vacuous


def test_sampling_is_reproducible_from_the_seed():
    model, params = init(tiny())
    kwargs = dict(eos_id=0, max_new_tokens=12, temperature=1.5, top_k=20, top_p=0.95)
    a = generate(model, params, [[3, 4]], seed=1, **kwargs)
    assert a == generate(model, params, [[3, 4]], seed=1, **kwargs)
    assert a != generate(model, params, [[3, 4]], seed=2, **kwargs)


def test_filter_logits_top_k_and_top_p():
    x = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda **kw: np.isfinite(filter_logits(x, temperature=1.0, **kw))[0].tolist()
    assert kept(top_k=2, top_p=1.0) == [True, True, False, False]
    assert kept(top_k=0, top_p=0.7) == [True, True, False, False]
    assert kept(top_k=0, top_p=0.5) == [True, False, False, False]
    ids, mask = left_pad([[1, 2, 3], [4]], 0)
    np.testing.assert_array_equal(ids, [[1, 2, 3], [0, 0, 4]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])


# ---------------------------------------------------------------------------------- interop


def _hf_model(**config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(eos_token_id=0, bos_token_id=0, **config)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _parity(hf, path, ids, mask):
    import torch

    config = model_dir.load_hf_config(path)
    _, params, _ = model_dir.load_hf_dir(path)
    model = Model(GPT, config, (head_spec("lm"),))
    ours = logits(model, params, ids, mask)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)  # HF counts positions from the left edge
    with torch.no_grad():
        ref = hf(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions),
        ).logits.numpy()
    real = mask.astype(bool)
    return float(np.abs(ours[real] - ref[real]).max()), model, params


@pytest.mark.interop
def test_hf_gpt2_logits_import_export_and_greedy_generate(tmp_path):
    import torch
    import transformers

    hf = _hf_model(
        vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.3
    )
    hf.save_pretrained(tmp_path / "hf")
    ids = np.random.default_rng(0).integers(1, 99, (2, 12))
    mask = np.ones_like(ids)
    mask[1, :4] = 0
    err, model, params = _parity(hf, tmp_path / "hf", ids, mask)
    assert err < 1e-4
    bpe_dir = tmp_path / "hf"  # a tokenizer to carry along: 99 tokens, <|endoftext|> first
    vocab = {tok.END_OF_TEXT: 0, **{chr(0x100 + i): i + 1 for i in range(98)}}
    (bpe_dir / "vocab.json").write_text(json.dumps(vocab))
    (bpe_dir / "merges.txt").write_text("#version: 0.2\n")
    model_dir.import_hf(bpe_dir, tmp_path / "bertjax")
    model_dir.export_hf(tmp_path / "bertjax", tmp_path / "exported")
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    err_again, _, _ = _parity(again, tmp_path / "exported", ids, mask)
    assert err_again < 1e-4
    prompt = ids[:1, :5]
    expected = hf.generate(
        torch.tensor(prompt),
        attention_mask=torch.ones_like(torch.tensor(prompt)),
        do_sample=False,
        max_new_tokens=16,
        pad_token_id=0,
    )[0, 5:].tolist()
    expected = expected[: expected.index(0)] if 0 in expected else expected
    loaded, loaded_params = formats.load_pretrained(tmp_path / "bertjax")
    (ours,) = generate(
        loaded, loaded_params, [prompt[0].tolist()], eos_id=0, max_new_tokens=16, temperature=0.0
    )
    assert ours == expected and len(set(ours)) > 1


@pytest.mark.interop
@pytest.mark.slow
def test_hf_gpt2_124m_config_logits(tmp_path):
    hf = _hf_model()  # GPT2Config() defaults: the 124M model
    hf.save_pretrained(tmp_path / "hf")
    ids = np.random.default_rng(1).integers(1, 50257, (1, 16))
    err, _, _ = _parity(hf, tmp_path / "hf", ids, np.ones_like(ids))
    assert err < 1e-4


# ---------------------------------------------------------------------------------- the job


def test_pretrain_generate_and_resume(tmp_path, capsys):
    from bertjax.config import load_config
    from bertjax.training.finetune import finetune
    from bertjax.training.pretrain import pretrain
    from tests.conftest import REPO as repo

    overrides = [
        "--config.data.corpus=builtin:python-docs",
        "--config.data.eval_fraction=0.05",
        "--config.data.document_attention=True",
        "--config.train.num_steps=10",
        "--config.checkpoint.every_steps=5",
        "--config.train.log_every=1",
        "--config.optim.learning_rate=3e-3",
    ]
    config = load_config(repo / "configs/gpt/test.py", overrides)
    first = pretrain(config, tmp_path / "run")
    assert first["eval_perplexity"] == pytest.approx(np.exp(first["eval_loss"]))
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    model = tmp_path / "run" / "model"
    assert (model / "vocab.json").is_file() and (model / "merges.txt").is_file()
    assert model_dir.load_model_tokenizer(model).token_to_id(tok.END_OF_TEXT) == 0
    # exact resume: drop the last checkpoint and rerun from step 5 (data position included)
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "10")
    pretrain(load_config(repo / "configs/gpt/test.py", overrides), tmp_path / "run")
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["loss"] for r in rows if "loss" in r] == losses
    code = cli.main(
        [
            "generate",
            str(model),
            "The",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["prompt"] == "The" and len(result["tokens"]) <= 5
    # fine-tuned through the classification task; the fine-tuned model keeps its BPE files
    rows = [f"{'a good day' if i % 2 else 'a bad night'} {i}\t{i % 2}" for i in range(16)]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    task = [
        f"--config.init_from={model}",
        f"--config.task.train_file={tmp_path / 'train.tsv'}",
        f"--config.task.eval_file={tmp_path / 'train.tsv'}",
        "--config.task.max_len=16",
        "--config.train.global_batch_size=8",
        "--config.train.num_steps=2",
        "--config.checkpoint.async_save=False",
    ]
    finetune(load_config(repo / "configs/finetune/sst2.py", task), tmp_path / "ft")
    tuned = tmp_path / "ft" / "model"
    assert (tuned / "vocab.json").is_file() and (tuned / "merges.txt").is_file()
    assert cli.main(["predict", str(tmp_path / "ft"), "--text", "a good day"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["label"] in ("0", "1")


# ------------------------------------------------------------------------------- prompting


def test_zero_shot_scores_are_choice_log_likelihoods(bpe):
    from bertjax.tasks.prompting import classify, score_choices

    tokenizer = tok.load_tokenizer(bpe)
    model, params = init(tiny(vocab_size=400))
    prompts, choices = ["The class is", "A def"], [" good", " bad thing"]
    scores = score_choices(model, params, tokenizer, prompts, choices, batch_size=3)
    prompt = tokenizer.encode(prompts[1]).ids
    choice = tokenizer.encode(choices[1]).ids
    logp = jax.nn.log_softmax(logits(model, params, np.array([prompt + choice]))[0], axis=-1)
    expected = sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(choice))
    assert scores.shape == (2, 2) and scores[1, 1] == pytest.approx(float(expected), rel=1e-5)
    verbalizer = {"0": " bad thing", "1": " good"}
    labels = classify(
        model, params, tokenizer, ["is", "def"], template="The class {text}", verbalizer=verbalizer
    )
    assert labels == [
        "1" if s[0] > s[1] else "0"
        for s in score_choices(model, params, tokenizer, ["The class is", "The class def"], choices)
    ]


def test_task_inputs_use_end_of_text_for_byte_bpe(bpe):
    from bertjax.tasks.common import SpecialIds

    special = SpecialIds.from_tokenizer(tok.load_tokenizer(bpe))
    assert special == SpecialIds(cls=0, sep=0, pad=0)
