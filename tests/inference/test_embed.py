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
    model = Embedder(path, pooling="cls")
    assert model.max_len == 256  # sentence_bert_config.json's max_seq_length, not 512 positions
    cls = model(SENTENCES[:2])
    pooler = Embedder(path, pooling="pooler", normalize=True)(SENTENCES[:2])
    assert not np.allclose(np.linalg.norm(cls, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(pooler, axis=1), 1.0, atol=1e-6)


def test_bucket_lengths():
    assert [bucket_length(n, 128) for n in (1, 16, 17, 100, 128, 300)] == [8, 16, 24, 112, 128, 128]
    # 4 buckets per doubling: 16 shapes up to 256, at most 25% padding from 32 tokens on
    assert sorted({bucket_length(n, 256) for n in range(1, 257)}) == [
        *(8, 16, 24, 32, 40, 48, 56, 64),
        *(80, 96, 112, 128, 160, 192, 224, 256),
    ]
    assert all(n <= bucket_length(n, 512) <= 1.25 * n for n in range(32, 513))


def test_length_buckets_keep_each_text_as_embedded_alone(tmp_path):
    """Texts of mixed lengths (four buckets, one text cut), batched longest first: every row equals the text
    embedded on its own, in input order."""
    from bertjax.interop import model_dir
    from bertjax.models.bert import BertConfig
    from tests.conftest import data_dir
    from tests.training.test_finetune import TINY

    vocab = data_dir() / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"real data folder {data_dir()} is absent (set BERTJAX_DATA)")
    cfg = BertConfig(**{**TINY, "max_position_embeddings": 32})
    model_dir.save_model(tmp_path, model_dir.init_params(cfg, heads=(), seed=1), cfg, vocab)
    texts = [" ".join(SENTENCES[: 1 + i % 4]) for i in range(7)] + ["short", ""]
    model = Embedder(tmp_path, pooling="mean", batch_size=4)
    lengths = [len(ids) for ids in model._encode(texts)]
    assert {bucket_length(n, 32) for n in lengths} == {8, 16, 24, 32} and max(lengths) == 32  # cut
    batched = model(texts)
    alone = np.concatenate([model([t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # 6 distinct texts, of which the two longest cut to the same 32 tokens: 5 distinct rows
    assert len({tuple(row) for row in batched.round(4)}) == 5
