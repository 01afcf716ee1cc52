"""`bertjax embed`: sentence embeddings equal sentence-transformers' recipe on real weights."""

import numpy as np
import pytest

from bertjax import cli
from bertjax.inference import Embedder
from bertjax.inference.embed import bucket_length
from tests.interop.test_convert import minilm_dir

SENTENCES = [
    "This framework generates embeddings for each input sentence.",
    "Sentences are passed as a list of strings.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage while the crowd sings along loudly and happily.",
    "Ünïcödé, accents and CJK 漢字 too!",
]


def _sentence_transformers_recipe(path, sentences):
    """all-MiniLM-L6-v2's model card: mean of the token embeddings over the attention mask,
    then L2 normalisation, with transformers and torch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    encoded = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


@pytest.mark.interop
def test_minilm_mean_pooling_matches_sentence_transformers(tmp_path):
    path = minilm_dir()
    expected = _sentence_transformers_recipe(path, SENTENCES)
    got = Embedder(path, pooling="mean", normalize=True, batch_size=8)(SENTENCES)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    print("max |bertjax - sentence-transformers| =", float(np.abs(got - expected).max()))
    # the command, on a file, row i for line i
    lines = tmp_path / "sentences.txt"
    lines.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "vectors.npy"
    argv = ["embed", str(path), "--input", str(lines), "--out", str(out)]
    assert cli.main([*argv, "--pooling", "mean", "--normalize", "--no-progress"]) == 0
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


@pytest.mark.interop
def test_cls_and_pooler_pooling_are_not_normalised_unless_asked():
    path = minilm_dir()
    cls = Embedder(path, pooling="cls")(SENTENCES[:2])
    pooler = Embedder(path, pooling="pooler", normalize=True)(SENTENCES[:2])
    assert not np.allclose(np.linalg.norm(cls, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(pooler, axis=1), 1.0, atol=1e-6)


def test_bucket_lengths():
    assert [bucket_length(n, 128) for n in (1, 16, 17, 100, 128, 300)] == [
        16,
        16,
        32,
        128,
        128,
        128,
    ]
