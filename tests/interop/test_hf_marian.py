"""The Marian family against transformers' `MarianMTModel` on the same random weights: logits
and cross-attention, export and reload, and greedy and beam-search translation token for token.

One small random `MarianMTModel` (module fixture) serves every test. Its weights are given some
structure so that generation is not degenerate: large weights and random LayerNorms make the
output depend on the source, and a bias towards end-of-sequence makes translations end at
different lengths (the tests assert both, and that beam search differs from greedy somewhere).
"""

import dataclasses

import jax
import numpy as np
import pytest

from bertjax.interop import hf_marian
from bertjax.models import Model, get_family, head_spec
from bertjax.models.layers import stack_layer_params
from bertjax.models.seq2seq_decoding import translate_ids

pytestmark = pytest.mark.interop

VOCAB, PAD, EOS, MAX_LEN = 48, 47, 0, 10


@pytest.fixture(scope="module")
def pair():
    """(transformers model, bertjax model, its params, sources) with the same weights."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.MarianConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=32,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        forced_eos_token_id=EOS,
        dropout=0.0,
        init_std=0.5,  # large weights: outputs that depend on the source
        attn_implementation="eager",  # returns attention weights
    )
    torch.manual_seed(1)
    hf = transformers.MarianMTModel(hf_config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layer_norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
        hf.final_logits_bias.normal_(0.0, 1.0)
        hf.final_logits_bias[0, EOS] = 1.0  # end-of-sequence likely enough to stop early
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    config = hf_marian.config_from_hf(hf_config.to_dict())
    params, fresh = hf_marian.params_from_hf(state, config)
    assert fresh == []
    model = Model(get_family("marian"), config, (head_spec("lm"),))
    rng = np.random.default_rng(0)
    sources = [[*r[: rng.integers(1, 8)], EOS] for r in rng.integers(1, PAD, (24, 8)).tolist()]
    return hf, model, params, sources


def _padded(rows, pad):
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def _hf_logits(hf, src, src_mask, dec, dec_mask):
    import torch

    with torch.no_grad():
        out = hf(
            input_ids=torch.tensor(src),
            attention_mask=torch.tensor(src_mask),
            decoder_input_ids=torch.tensor(dec),
            decoder_attention_mask=torch.tensor(dec_mask),
            output_attentions=True,
        )
    return out.logits.numpy(), out.cross_attentions[-1].mean(1).numpy()


def test_logits_and_cross_attention_equal_transformers_and_after_export(pair, tmp_path):
    hf, model, params, sources = pair
    src, src_mask = _padded(sources[:4], PAD)
    dec, dec_mask = _padded([[PAD, 5, 9, 11, 3], [PAD, 7], [PAD, 1, 2], [PAD, 30, 31, 32]], PAD)
    inputs = {"input_ids": src, "attention_mask": src_mask, "decoder_input_ids": dec}
    inputs = {
        k: v.astype(np.int32) for k, v in {**inputs, "decoder_attention_mask": dec_mask}.items()
    }
    out = model.apply({"params": params}, inputs)
    logits, attention = _hf_logits(hf, src, src_mask, dec, dec_mask)
    real = dec_mask.astype(bool)  # HF's padded decoder rows are not compared
    np.testing.assert_allclose(np.asarray(out["lm_logits"])[real], logits[real], atol=1e-4)
    assert np.abs(logits).max() > 5  # not a degenerate comparison
    np.testing.assert_allclose(np.asarray(out["cross_attention"])[real], attention[real], atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["cross_attention"]).sum(-1), 1.0, atol=1e-5)

    import transformers

    (tmp_path / "vocab.json").write_text("{}")  # Marian's tokenizer files are copied if present
    hf_marian.write_hf_files(
        tmp_path, jax.device_get(params), model.config, tmp_path / "vocab.json"
    )
    reloaded = transformers.MarianMTModel.from_pretrained(tmp_path, attn_implementation="eager")
    again, _ = _hf_logits(reloaded, src, src_mask, dec, dec_mask)
    np.testing.assert_allclose(again[real], np.asarray(out["lm_logits"])[real], atol=1e-4)


def _generate(hf, sources, beams):
    import torch

    src, mask = _padded(sources, PAD)
    out = hf.generate(
        input_ids=torch.tensor(src),
        attention_mask=torch.tensor(mask),
        num_beams=beams,
        do_sample=False,
        max_new_tokens=MAX_LEN,
        bad_words_ids=[[PAD]],  # as opus-mt's generation configs
    ).tolist()
    rows = [row[1:] for row in out]  # without the start token
    return [row[: row.index(EOS)] if EOS in row else row for row in rows]


def test_greedy_and_beam_search_equal_transformers_generate(pair):
    hf, model, params, sources = pair
    options = dict(start_id=PAD, eos_id=EOS, pad_id=PAD, max_len=MAX_LEN)
    greedy, attention = translate_ids(model, params, sources, with_attention=True, **options)
    assert greedy == _generate(hf, sources, 1)
    beam, _ = translate_ids(model, params, sources, beams=4, **options)
    assert beam == _generate(hf, sources, 4)
    lengths = {len(t) for t in greedy + beam}
    assert MAX_LEN - 1 in lengths and min(lengths) < MAX_LEN - 1  # max length and eos stops
    assert sum(g != b for g, b in zip(greedy, beam, strict=True)) >= 2  # the beams matter
    assert len({tuple(t) for t in greedy}) > 4  # the source matters
    with pytest.raises(ValueError, match="longest source \\(40 tokens\\) exceeds the model's 32"):
        translate_ids(model, params, [[5] * 40], **options)

    # the attention of each generated token is the teacher-forced cross-attention there
    i = max(range(len(greedy)), key=lambda i: len(greedy[i]))
    inputs = {
        "input_ids": np.asarray([sources[i]], np.int32),
        "attention_mask": np.ones((1, len(sources[i])), np.int32),
        "decoder_input_ids": np.asarray([[PAD, *greedy[i]]], np.int32)[:, :-1],
    }
    forced = model.apply({"params": params}, inputs)["cross_attention"][0]
    assert attention[i].shape == (len(greedy[i]), len(sources[i]))
    np.testing.assert_allclose(attention[i], np.asarray(forced), atol=1e-5)


def test_beam_search_with_scanned_layers_reorders_the_cache_the_same(pair):
    _, model, params, sources = pair
    config = dataclasses.replace(model.config, scan_layers=True)
    paths = get_family("marian").stack_paths
    scanned = stack_layer_params(jax.device_get(params), paths, config.num_layers)
    options = dict(start_id=PAD, eos_id=EOS, pad_id=PAD, max_len=MAX_LEN, beams=4)
    want, _ = translate_ids(model, params, sources[:8], **options)  # compiled before
    got, _ = translate_ids(
        Model(model.family, config, model.heads), scanned, sources[:8], **options
    )
    assert got == want


TEXTS = [
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "The cat sits on the mat.",
    "Two dogs run in the park.",
    "A plane is taking off.",
    "Children are playing in the snow.",
    "A man is riding a horse.",
    "The sun is shining today.",
]


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_import_hf_and_export_hf_keep_weights_tokenizer_and_translations(pair, tmp_path):
    """A MarianMTModel directory with Marian's tokenizer files -> `bertjax import-hf` ->
    `bertjax export-hf`: the same weights and files, and the imported model tokenizes like
    MarianTokenizer and translates like `generate` with num_beams=4."""
    import transformers
    from safetensors.numpy import load_file

    from bertjax import cli
    from bertjax.config import load_config
    from bertjax.data.tokenizer_kinds import sentencepiece
    from bertjax.interop import formats, init_from, model_dir
    from tests.conftest import REPO

    hf, model, params, _ = pair
    vocab = sentencepiece.train_sentencepiece(TEXTS * 4, tmp_path / "tok", vocab_size=VOCAB)
    assert len(sentencepiece.read_vocab(vocab)) == VOCAB
    hf_dir, ours, again = tmp_path / "hf", tmp_path / "bertjax", tmp_path / "again"
    hf_dir.mkdir()
    hf_marian.write_hf_files(hf_dir, jax.device_get(params), model.config, vocab)
    assert cli.main(["import-hf", str(hf_dir), str(ours)]) == 0
    assert cli.main(["export-hf", str(ours), str(again)]) == 0
    first, second = load_file(hf_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    for name in hf_marian.TOKENIZER_FILES:
        assert (again / name).read_bytes() == (tmp_path / "tok" / name).read_bytes(), name

    marian_tok = transformers.MarianTokenizer.from_pretrained(again)
    ids = [marian_tok(t).input_ids for t in TEXTS]
    assert [model_dir.load_model_tokenizer(ours).encode(t).ids for t in TEXTS] == ids
    loaded, loaded_params = formats.load_pretrained(ours)
    options = dict(start_id=PAD, eos_id=EOS, pad_id=PAD, max_len=MAX_LEN, beams=4)
    translations, _ = translate_ids(loaded, loaded_params, ids, **options)
    reloaded = transformers.MarianMTModel.from_pretrained(again).eval()
    assert translations == _generate(reloaded, ids, 4)

    # training continues from the transformers directory, with its tokenizer files as they are
    config = load_config(REPO / "configs/seq2seq/marian_test.py", [f"--config.init_from={hf_dir}"])
    init = init_from.load_init(config, tmp_path / "work")
    assert init.vocab == tmp_path / "work/tokenizer/source.spm"
    for name in hf_marian.TOKENIZER_FILES:
        assert (init.vocab.parent / name).read_bytes() == (hf_dir / name).read_bytes(), name
    shared = init.params["backbone"]["shared"]["embedding"]
    np.testing.assert_array_equal(shared, first["model.shared.weight"])
    assert init.config.num_layers == model.config.num_layers and "lm" in init.params["heads"]
