"""Tokenizer: training, loading, Hangul handling and parity with transformers' BERT tokenizer."""

import inspect
import json
import re

import pytest

from bertjax.data import tokenizer as tokenizer_lib

KOREAN = [
    "대한민국의 수도는 서울입니다.",
    "오늘은 날씨가 정말 좋아서 공원에 산책을 갔습니다.",
    "저는 매일 아침 커피를 마시고 신문을 읽습니다.",
    "한국어 문장은 띄어쓰기 단위로 나뉩니다.",
    "도서관에서 책을 빌려서 주말에 읽었습니다.",
]
JAMO = re.compile("[\u1100-\u11ff\u3130-\u318f]")
HANGUL_SYLLABLE = re.compile("[\uac00-\ud7a3]")


def _korean_vocab(tmp_path, strip_accents):
    corpus = tmp_path / "ko.txt"
    corpus.write_text("\n".join(KOREAN * 3) + "\n", encoding="utf-8")
    out_dir = tmp_path / f"vocab-{strip_accents}"
    return tokenizer_lib.train_wordpiece(
        [corpus], out_dir, vocab_size=400, strip_accents=strip_accents, min_frequency=1
    )


def test_korean_keeps_hangul_syllables_without_accent_stripping(tmp_path):
    tok = tokenizer_lib.load_tokenizer(_korean_vocab(tmp_path, strip_accents=False))
    for sentence in KOREAN:
        tokens = tok.encode(sentence, add_special_tokens=False).tokens
        assert not any(JAMO.search(t) for t in tokens), tokens
        assert any(HANGUL_SYLLABLE.search(t) for t in tokens)
        words, current = [], ""
        for token in tokens:
            if token.startswith("##"):
                current += token[2:]
            else:
                if current:
                    words.append(current)
                current = token
        words.append(current)
        assert "[UNK]" not in tokens
        assert "".join(words) == sentence.replace(" ", "")
        assert [w for w in words if w != "."] == sentence.rstrip(".").split()


def test_accent_stripping_decomposes_hangul(tmp_path):
    # The behaviour the test above guards against: NFD splits syllables into jamo.
    tok = tokenizer_lib.load_tokenizer(_korean_vocab(tmp_path, strip_accents=True))
    tokens = tok.encode(KOREAN[0], add_special_tokens=False).tokens
    assert any(JAMO.search(t) for t in tokens)


def test_train_small_vocab_on_shakespeare(shared_data, tmp_path):
    corpus = shared_data / "tiny-shakespeare" / "input.txt"
    vocab_path = tokenizer_lib.train_wordpiece([corpus], tmp_path, vocab_size=1500)
    vocab = tokenizer_lib.read_vocab(vocab_path)
    assert len(vocab) == 1500
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config == {"lowercase": True, "strip_accents": None, "handle_chinese_chars": True}
    tok = tokenizer_lib.load_tokenizer(vocab_path)
    assert tokenizer_lib.special_token_ids(tok) == dict(pad=0, unk=1, cls=2, sep=3, mask=4)
    lines = [line for line in corpus.read_text().splitlines() if line.strip()][:300]
    for line, encoding in zip(
        lines, tok.encode_batch(lines, add_special_tokens=False), strict=True
    ):
        assert "[UNK]" not in encoding.tokens
        joined = "".join(t.removeprefix("##") for t in encoding.tokens)
        assert joined == "".join(line.lower().split())
    pair = tok.encode("to be", "or not")
    assert pair.tokens[0] == "[CLS]" and pair.tokens.count("[SEP]") == 2
    assert pair.type_ids == [0, 0, 0, 0, 1, 1, 1]
    masked = tok.encode("to be or [MASK] to be", add_special_tokens=False)
    assert masked.ids[3] == 4 and len(masked.ids) == 6
    assert tok.get_vocab_size() == 1500  # the specials were already in the vocabulary


def test_config_beside_vocab_sets_defaults(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Hello World. Hello Again World.\n" * 5)
    vocab_path = tokenizer_lib.train_wordpiece([corpus], tmp_path, vocab_size=80, lowercase=False)
    assert tokenizer_lib.load_tokenizer(vocab_path).encode("Hello").tokens[1:-1] == ["Hello"]
    lowered = tokenizer_lib.load_tokenizer(vocab_path, lowercase=True).encode("Hello").tokens
    assert "Hello" not in lowered


def test_missing_special_token_names_the_vocab(tmp_path):
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    tok = tokenizer_lib.load_tokenizer(vocab_path)
    with pytest.raises(ValueError, match=r"\[MASK\].*vocab\.txt"):
        tokenizer_lib.special_token_ids(tok, str(vocab_path))


def _hf_tokenizer(vocab_path, lowercase):
    transformers = pytest.importorskip("transformers")
    cls = transformers.BertTokenizerFast
    key = "vocab" if "vocab" in inspect.signature(cls.__init__).parameters else "vocab_file"
    return cls(**{key: str(vocab_path)}, do_lower_case=lowercase)


def _wiki_lines(shared_data, n=200):
    path = shared_data / "pretrain-wikipedia-sample" / "wiki_01.txt"
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith(("<doc", "</doc")):
                lines.append(line.strip()[:2000])
            if len(lines) == n:
                break
    return lines


@pytest.mark.interop
@pytest.mark.parametrize("name,lowercase", [("uncased", True), ("cased", False)])
def test_ids_match_transformers(shared_data, name, lowercase):
    vocab_path = shared_data / "vocab" / f"bert-base-{name}-vocab.txt"
    hf = _hf_tokenizer(vocab_path, lowercase)
    ours = tokenizer_lib.load_tokenizer(vocab_path, lowercase=lowercase)
    lines = _wiki_lines(shared_data)
    expected = hf(lines)["input_ids"]
    got = [e.ids for e in ours.encode_batch(lines)]
    assert sum(map(len, got)) > 10_000
    assert got == expected
