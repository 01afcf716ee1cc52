"""`bertjax fill-mask`: top-k predictions equal transformers' fill-mask on the same weights."""

import json

import numpy as np
import pytest

from bertjax import cli
from bertjax.inference.fill_mask import fill_mask
from bertjax.interop import formats, model_dir

WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . , ! ? the a cat dog sat ran on in under mat house big small "
    "red blue green is was and or to of it he she they we you i my your ##s ##ed ##ing ##ly quick "
    "brown fox jump over lazy paris capital france city river tree bird fish sun moon day night"
).split()
SIZE = 99
TEXT = "The big cat [MASK] on the red mat."
TWO_MASKS = "The [MASK] dog ran under the [MASK] tree."


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("hf_fill")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=SIZE,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        initializer_range=0.5,  # spread-out logits, so the top-k order is well defined
    )
    transformers.BertForPreTraining(config).save_pretrained(path)
    vocab = WORDS + [f"w{i}" for i in range(SIZE - len(WORDS))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return path


@pytest.fixture(scope="module")
def bertjax_dir(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bj_fill") / "model"
    assert model_dir.import_hf(hf_dir, out) == []
    return out


def reference(hf_dir, text, top_k):
    """Transformers' answer: softmax over BertForMaskedLM logits at each [MASK]."""
    import torch
    import transformers

    tokenizer = transformers.BertTokenizerFast.from_pretrained(hf_dir)
    model = transformers.BertForMaskedLM.from_pretrained(hf_dir).eval()
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    positions = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero()[:, 0]
    probs = torch.softmax(logits[positions], dim=-1)
    scores, tokens = probs.topk(top_k, dim=-1)
    return tokens.numpy(), scores.numpy(), inputs["input_ids"][0].tolist()


@pytest.mark.interop
@pytest.mark.parametrize("text", [TEXT, TWO_MASKS])
def test_fill_mask_matches_transformers(hf_dir, bertjax_dir, text):
    tokens, scores, ids = reference(hf_dir, text, top_k=5)
    tokenizer = model_dir.load_model_tokenizer(bertjax_dir)
    assert tokenizer.encode(text).ids == ids
    model, params = formats.load_pretrained(bertjax_dir)
    results = fill_mask(model, params, tokenizer, text, top_k=5)
    assert len(results) == len(tokens)
    for predictions, want_tokens, want_scores in zip(results, tokens, scores, strict=True):
        assert [p["token"] for p in predictions] == want_tokens.tolist()
        got = np.array([p["score"] for p in predictions])
        print(f"fill-mask max score diff: {np.abs(got - want_scores).max():.2e}")
        np.testing.assert_allclose(got, want_scores, atol=1e-5)
        for p in predictions:
            assert p["token_str"] in p["sequence"]


@pytest.mark.interop
def test_fill_mask_matches_pipeline(hf_dir, capsys):
    transformers = pytest.importorskip("transformers")
    pipe = transformers.pipeline(
        "fill-mask",
        model=transformers.BertForMaskedLM.from_pretrained(hf_dir),
        tokenizer=transformers.BertTokenizerFast.from_pretrained(hf_dir),
        device="cpu",
    )
    # MODEL may be the transformers directory itself; one mask gives a list, several a list of lists.
    for text in (TEXT, TWO_MASKS):
        expected = pipe(text, top_k=3)
        assert cli.main(["fill-mask", str(hf_dir), text, "--top-k", "3", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        if text == TEXT:
            expected, got = [expected], [got]
        for want_list, got_list in zip(expected, got, strict=True):
            for want, have in zip(want_list, got_list, strict=True):
                assert abs(have.pop("score") - want.pop("score")) <= 1e-5
                assert have == want  # token, token_str and sequence


@pytest.mark.interop
def test_fill_mask_cli_text_and_json(bertjax_dir, capsys):
    assert cli.main(["fill-mask", str(bertjax_dir), TWO_MASKS, "--top-k", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == 2 and all(len(p) == 2 for p in got)
    assert set(got[0][0]) == {"score", "token", "token_str", "sequence"}
    assert cli.main(["fill-mask", str(bertjax_dir), TEXT, "--top-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "[MASK] 1 of 1:" and len(lines) == 5
    assert cli.main(["fill-mask", str(bertjax_dir), "no mask here"]) == 2
    assert "has no [MASK]" in capsys.readouterr().err


def test_fill_mask_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fill-mask", "--help"])
    text = capsys.readouterr().out
    assert "--top-k" in text and "--json" in text and "[MASK]" in text
