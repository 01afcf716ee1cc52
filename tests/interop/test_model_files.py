"""Model directories carry tokenizer.json and transformers' tokenizer_config.json:
`transformers.AutoTokenizer.from_pretrained(dir)` gives bertjax's ids; bertjax's own options live
in bertjax_tokenizer.json, and directories with them in tokenizer_config.json still load."""

import json

import pytest

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.interop import model_dir
from bertjax.models.bert import BertConfig
from tests.conftest import data_dir
from tests.data.test_tokenizer import JAMO, KOREAN, _korean_vocab

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Héllo, Wörld! naïve café [MASK] résumé",
    "Tokyo 東京 is big; don't panic.",
]


def _save(tmp_path, vocab, options, name="model"):
    size = len(tokenizer_lib.read_vocab(vocab))
    cfg = BertConfig(vocab_size=size, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8)
    out = tmp_path / name
    model_dir.save_model(out, model_dir.init_params(cfg, heads=()), cfg, vocab, options)
    return out


def _assert_same_ids(path, texts, pairs):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(path)
    ours = model_dir.load_model_tokenizer(path)
    for text in texts:
        assert theirs(text)["input_ids"] == ours.encode(text).ids, text
    for a, b in pairs:
        encoded, expected = theirs(a, b), ours.encode(a, b)
        assert encoded["input_ids"] == expected.ids
        assert encoded["token_type_ids"] == expected.type_ids
    assert theirs.mask_token_id == ours.token_to_id("[MASK]")
    assert theirs.pad_token_id == ours.token_to_id("[PAD]")


@pytest.mark.interop
@pytest.mark.parametrize("options", [None, {"lowercase": False}])
def test_auto_tokenizer_matches_bertjax(tmp_path, options):
    name = "bert-base-uncased-vocab.txt" if options is None else "bert-base-cased-vocab.txt"
    vocab = data_dir() / "vocab" / name
    if not vocab.is_file():
        pytest.skip(f"{vocab} is absent (set BERTJAX_DATA)")
    path = _save(tmp_path, vocab, options)
    files = {p.name for p in path.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "bertjax_tokenizer.json"} <= files
    assert json.loads((path / "bertjax_tokenizer.json").read_text()) == (options or {})
    _assert_same_ids(path, SENTENCES, [(SENTENCES[0], SENTENCES[1])])


@pytest.mark.interop
def test_auto_tokenizer_keeps_hangul_syllables_as_bertjax(tmp_path):
    vocab = _korean_vocab(tmp_path)
    options = tokenizer_lib.read_options(vocab.parent)
    assert options["keep_hangul"] is True
    path = _save(tmp_path, vocab, options)
    _assert_same_ids(path, KOREAN, [(KOREAN[0], KOREAN[1])])
    # the normalizer matters: BERT's own (NFD) would split the syllables into jamo
    transformers = pytest.importorskip("transformers")
    tokens = transformers.AutoTokenizer.from_pretrained(path).tokenize(KOREAN[0])
    assert not any(JAMO.search(t) for t in tokens) and "[UNK]" not in tokens


def test_directories_with_options_in_tokenizer_config_still_load(tmp_path):
    vocab = data_dir() / "vocab" / "bert-base-cased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"{vocab} is absent (set BERTJAX_DATA)")
    path = _save(tmp_path, vocab, {"lowercase": False})
    for name in ("bertjax_tokenizer.json", "tokenizer.json"):
        (path / name).unlink()
    (path / "tokenizer_config.json").write_text(json.dumps({"lowercase": False}))  # the old way
    assert model_dir.tokenizer_options(path) == {"lowercase": False}
    tokenizer = model_dir.load_model_tokenizer(path)
    assert tokenizer.encode("Hello").tokens == ["[CLS]", "Hello", "[SEP]"]
    _, params = model_dir.load_model_dir(path)
    assert "backbone" in params
