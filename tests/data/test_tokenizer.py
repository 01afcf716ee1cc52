"""Tokenizer: training, loading, Hangul handling and parity with transformers' BERT tokenizer."""

import inspect
import json
import re
import subprocess
import sys

import pytest

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.text import utf8_policy
from tests.conftest import REPO

KOREAN = [
    "대한민국의 수도는 서울입니다.",
    "오늘은 날씨가 정말 좋아서 공원에 산책을 갔습니다.",
    "저는 매일 아침 커피를 마시고 신문을 읽습니다.",
    "한국어 문장은 띄어쓰기 단위로 나뉩니다.",
    "도서관에서 책을 빌려서 주말에 읽었습니다.",
]
JAMO = re.compile("[\u1100-\u11ff]")  # conjoining jamo: what NFD makes of a syllable
HANGUL_SYLLABLE = re.compile("[\uac00-\ud7a3]")


def _korean_vocab(tmp_path, lowercase=True, strip_accents=None, **options):
    corpus = tmp_path / "ko.txt"
    corpus.write_text("\n".join(KOREAN * 3) + "\n", encoding="utf-8")
    out_dir = tmp_path / f"vocab-{lowercase}-{strip_accents}"
    return tokenizer_lib.train_wordpiece(
        [corpus],
        out_dir,
        vocab_size=400,
        lowercase=lowercase,
        strip_accents=strip_accents,
        min_frequency=1,
        **options,
    )


def _words(tokens):
    """Joins WordPiece pieces back into words."""
    words = []
    for token in tokens:
        if token.startswith("##") and words:
            words[-1] += token[2:]
        else:
            words.append(token)
    return words


def _assert_syllables_kept(tok, sentence):
    """No [UNK], no jamo, pieces join into the words, offsets point at each piece's text."""
    encoding = tok.encode(sentence, add_special_tokens=False)
    assert "[UNK]" not in encoding.tokens
    assert not any(JAMO.search(t) for t in encoding.tokens), encoding.tokens
    words = [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(sentence.lower())]
    assert _words(encoding.tokens) == words
    for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True):
        assert tok.normalizer.normalize_str(sentence[start:end]) == token.removeprefix("##")


@pytest.mark.parametrize("lowercase,strip_accents", [(True, None), (True, True), (False, False)])
def test_korean_keeps_hangul_syllables_whatever_the_options(tmp_path, lowercase, strip_accents):
    vocab_path = _korean_vocab(tmp_path, lowercase, strip_accents)
    assert json.loads((vocab_path.parent / "bertjax_tokenizer.json").read_text())["keep_hangul"]
    vocab = tokenizer_lib.read_vocab(vocab_path)
    assert not any(JAMO.search(t) for t in vocab)
    tok = tokenizer_lib.load_tokenizer(vocab_path)
    for sentence in KOREAN:
        _assert_syllables_kept(tok, sentence)
    assert tok.encode("서울", add_special_tokens=False).tokens == ["서", "##울"]


def test_rare_hangul_syllables_are_not_cut_by_limit_alphabet(tmp_path):
    corpus = tmp_path / "ko.txt"
    corpus.write_text("\n".join(KOREAN * 3) + "\n제임스는 책을 샀다.\nxyz\n", encoding="utf-8")
    vocab_path = tokenizer_lib.train_wordpiece(
        [corpus], tmp_path / "vocab", vocab_size=300, limit_alphabet=1, min_frequency=1
    )
    vocab = tokenizer_lib.read_vocab(vocab_path)
    assert {"제", "임", "스", "샀", "##샀", "##임"} <= set(vocab)  # each seen once
    # The limit applies to the other characters: the most frequent one, ".", is kept.
    assert [t for t in vocab if len(t) == 1 and not HANGUL_SYLLABLE.match(t)] == ["."]
    tok = tokenizer_lib.load_tokenizer(vocab_path)
    _assert_syllables_kept(tok, "제임스는 책을 샀다.")


def test_korean_wikipedia_syllables_and_offsets(shared_data, tmp_path):
    files = sorted((shared_data / "ko-wikipedia" / "AA").glob("wiki_*"))
    if len(files) < 2:
        pytest.skip(f"{shared_data}/ko-wikipedia/AA is absent")
    corpus = tmp_path / "ko-slice.txt"
    with open(files[0], encoding="utf-8") as f:
        text = "".join(f.readlines(300_000))  # about 300 kB of whole lines
    corpus.write_text(text + "\n".join(KOREAN + ["제임스는 책을 샀다."]) + "\n", encoding="utf-8")
    vocab_path = tokenizer_lib.train_wordpiece([corpus], tmp_path / "vocab", vocab_size=8000)
    tok = tokenizer_lib.load_tokenizer(vocab_path)
    assert _words(tok.encode("제임스 샀다", add_special_tokens=False).tokens) == ["제임스", "샀다"]
    held_out = [
        line.strip()
        for line in files[-1].read_text(encoding="utf-8").splitlines()[:400]
        if line.strip() and not line.startswith(("<doc", "</doc"))
    ]
    encodings = tok.encode_batch(held_out, add_special_tokens=False)
    pieces = [t for e in encodings for t in e.tokens]
    assert len(pieces) > 10_000
    assert not any(JAMO.search(t) for t in pieces)
    assert sum(HANGUL_SYLLABLE.search(t) is not None for t in pieces) > len(pieces) / 2
    for line, encoding in zip(held_out, encodings, strict=True):
        for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True):
            if token != "[UNK]":
                original = tok.normalizer.normalize_str(line[start:end]).strip()  # CJK padding
                assert original == token.removeprefix("##"), (line, token)


@pytest.mark.interop
def test_vocab_without_keep_hangul_decomposes_like_transformers(shared_data):
    # bert-base-* vocabularies and imported models read Korean as transformers does: NFD jamo.
    vocab_path = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    hf = _hf_tokenizer(vocab_path, lowercase=True)
    ours = tokenizer_lib.load_tokenizer(vocab_path, lowercase=True)
    sentences = KOREAN + ["제임스는 책을 샀다."]
    assert [e.ids for e in ours.encode_batch(sentences)] == hf(sentences)["input_ids"]
    assert any(JAMO.search(t) for t in ours.encode(KOREAN[0]).tokens)


@pytest.mark.parametrize("name,lowercase", [("uncased", True), ("cased", False)])
def test_keep_hangul_leaves_english_unchanged(shared_data, name, lowercase):
    vocab_path = shared_data / "vocab" / f"bert-base-{name}-vocab.txt"
    lines = _wiki_lines(shared_data) + ["Crème brûlée à la carte, naïve café.", "ΟΔΟΣ Straße"]
    got = {}
    for keep_hangul in (False, True):
        tok = tokenizer_lib.load_tokenizer(vocab_path, lowercase=lowercase, keep_hangul=keep_hangul)
        got[keep_hangul] = [(e.ids, e.offsets) for e in tok.encode_batch(lines)]
    assert got[True] == got[False]


def test_training_is_reproducible_across_processes(tmp_path):
    # tokenizers' own trainer gives two processes different vocabularies here (issue 1794).
    from bertjax.data.corpus import write_builtin_corpus

    files = [str(p) for p in write_builtin_corpus(tmp_path / "corpus")]
    (tmp_path / "files.json").write_text(json.dumps(files))
    script = (
        "import json, sys; from bertjax.data import tokenizer; "
        "files = json.load(open(sys.argv[1])); "
        "tokenizer.train_wordpiece(files, sys.argv[2], vocab_size=4320)"
    )
    vocabs = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "files.json"), str(out)],
            cwd=REPO,
            check=True,
            timeout=120,
        )
        vocabs.append((out / "vocab.txt").read_bytes())
    assert len(vocabs[0].splitlines()) > 4000
    assert vocabs[0] == vocabs[1]


def test_train_small_vocab_on_shakespeare(shared_data, tmp_path):
    corpus = shared_data / "tiny-shakespeare" / "input.txt"
    vocab_path = tokenizer_lib.train_wordpiece([corpus], tmp_path, vocab_size=1500)
    vocab = tokenizer_lib.read_vocab(vocab_path)
    assert len(vocab) == 1500
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    config = json.loads((tmp_path / "bertjax_tokenizer.json").read_text())
    assert config == {
        "lowercase": True,
        "strip_accents": None,
        "handle_chinese_chars": True,
        "keep_hangul": True,
    }
    tok = tokenizer_lib.load_tokenizer(vocab_path)
    assert tokenizer_lib.special_token_ids(tok) == dict(pad=0, unk=1, cls=2, sep=3, mask=4, eos=3)
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


def test_model_directories_keep_the_hangul_option(tmp_path):
    # A directory tokenizes as its vocabulary was trained: bertjax's keep syllables, and an
    # imported transformers directory decomposes them unless its tokenizer_config says otherwise.
    from bertjax.interop import hf_bert as convert
    from bertjax.interop import model_dir

    vocab_path = _korean_vocab(tmp_path)
    bertjax_dir, hf_dir = tmp_path / "bertjax", tmp_path / "hf"
    for path, config, options in [
        (
            bertjax_dir,
            {"format": "bertjax", "model": {}},
            vocab_path.parent / "bertjax_tokenizer.json",
        ),
        (hf_dir, {"model_type": "bert"}, None),
    ]:
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        (path / "vocab.txt").write_bytes(vocab_path.read_bytes())
        if options:  # as directories written before bertjax_tokenizer.json hold them
            (path / "tokenizer_config.json").write_bytes(options.read_bytes())
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    sentence = KOREAN[0]
    _assert_syllables_kept(model_dir.load_model_tokenizer(bertjax_dir), sentence)
    assert JAMO.search(model_dir.load_model_tokenizer(hf_dir).normalizer.normalize_str(sentence))
    assert convert.hf_tokenizer_options(hf_dir)["keep_hangul"] is False
    convert_options = {"do_lower_case": True, "keep_hangul": True}  # as write_hf_files writes
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(convert_options))
    _assert_syllables_kept(model_dir.load_model_tokenizer(hf_dir), sentence)


def test_invalid_utf8_and_empty_training_files_are_named(tmp_path, caplog):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"plain line\n" + "caf\xe9 au lait\n".encode("latin-1"))
    with utf8_policy(strict=True):
        with pytest.raises(ValueError, match=r"latin1\.txt:2:4: invalid UTF-8 in a tokenizer"):
            tokenizer_lib.train_wordpiece([bad], tmp_path / "a", vocab_size=60)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with caplog.at_level("WARNING", logger="bertjax.data.tokenizer"):
        tokenizer_lib.train_wordpiece([empty], tmp_path / "b", vocab_size=60)
    assert "hold no text: the vocabulary will hold only the special tokens" in caplog.text


def test_a_long_line_reaches_the_trainer_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_lib, "MAX_PIECE_BYTES", 64)
    words = [f"w{i % 37:03d}abc" for i in range(4000)]  # 7 characters + a space: 8 per piece
    one_line = tmp_path / "one.txt"
    one_line.write_text(" ".join(words) + " ")
    pieces = list(tokenizer_lib.line_pieces([one_line]))
    assert max(map(len, pieces)) == 64 and "".join(pieces) == one_line.read_text()
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(pieces[i] + "\n" for i in range(len(pieces))))
    vocabs = [
        tokenizer_lib.train_wordpiece([f], tmp_path / f.stem, vocab_size=80).read_text()
        for f in (one_line, lines)
    ]
    assert vocabs[0] == vocabs[1]
