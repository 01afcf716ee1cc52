"""Korean morpheme pre-tokenization (`pretokenizer="morpheme"`, MeCab-ko): options, offsets,
spans, and the spawn workers of data preparation."""

import json
import pathlib

import numpy as np
import pytest

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.prepare import prepare
from bertjax.data.source import PretrainingSource

pytest.importorskip("mecab_ko", reason="needs the korean extra (mecab-ko)")

# Real sentences: ko-wikipedia (지미 카터) and KLUE-NER-like text with numbers, Latin, hanja, emoji.
SENTENCES = [
    "지미 카터는 조지아주 섬터 카운티 플레인스 마을에서 태어났다.",
    "1953년 미국 해군 대위로 예편하였고 이후 땅콩·면화 등을 가꿔 많은 돈을 벌었다.",
    "제임스 얼 카터 주니어(, 1924년 10월 1일 ~ )는 민주당 출신 미국 39대 대통령이다.",
    "삼성전자(Samsung)는 2021년 3분기에 15조 8천억 원의 영업이익을 냈다고 漢字로 밝혔다 😀",
    "  서울특별시는   대한민국의 수도이며,\t최대 도시이다!  ",
]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("morpheme")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")
    return tokenizer_lib.train_wordpiece(
        [corpus], folder / "vocab", vocab_size=400, lowercase=False, pretokenizer="morpheme"
    )


def test_option_travels_with_the_vocabulary(vocab):
    folder = vocab.parent
    options = json.loads((folder / tokenizer_lib.OPTIONS_NAME).read_text())
    assert options["pretokenizer"] == "morpheme"
    # transformers cannot reproduce a custom pre-tokenizer: no files that would pretend it can
    assert not (folder / tokenizer_lib.TOKENIZER_JSON).exists()
    assert not (folder / tokenizer_lib.CONFIG_NAME).exists()
    tokens = tokenizer_lib.load_tokenizer(vocab).encode("태어났다").tokens
    assert tokens[1:-1] == ["태어났", "다"]  # the morpheme boundary, read back from the options
    whitespace = tokenizer_lib.load_tokenizer(vocab, pretokenizer="whitespace")
    assert whitespace.encode("태어났다").tokens[1:-1] == ["태어났", "##다"]


def test_whitespace_default_keeps_tokenizer_json(tmp_path, vocab):
    tokenizer_lib.write_tokenizer_files(tmp_path, vocab, {"lowercase": False})
    assert (tmp_path / tokenizer_lib.TOKENIZER_JSON).is_file()
    assert tokenizer_lib.resolve_options({})["pretokenizer"] == "whitespace"


def test_unknown_value_names_the_option(vocab):
    with pytest.raises(ValueError, match="pretokenizer='kiwi'"):
        tokenizer_lib.load_tokenizer(vocab, pretokenizer="kiwi")
    with pytest.raises(ValueError, match="pretokenizer"):
        tokenizer_lib.resolve_options({"pretokenizer": "mecab"})


def test_offsets_slice_the_original_text(vocab):
    tok = tokenizer_lib.load_tokenizer(vocab)
    for text, enc in zip(
        SENTENCES, tok.encode_batch(SENTENCES, add_special_tokens=False), strict=True
    ):
        assert enc.tokens and len(enc.tokens) == len(enc.offsets)
        for token, (start, end) in zip(enc.tokens, enc.offsets, strict=True):
            piece = text[start:end]
            assert piece and not piece.isspace()
            if token != "[UNK]":
                assert token.removeprefix(tokenizer_lib.CONTINUATION_PREFIX) == piece
        ends = [end for _, end in enc.offsets]
        assert ends == sorted(ends)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        (SENTENCES[0], "조지아주 섬터 카운티"),  # a KLUE-NER LC entity
        (SENTENCES[3], "15조 8천억 원"),  # QT, numbers inside
        (SENTENCES[2], "1924년 10월 1일"),  # DT
    ],
)
def test_span_round_trips(vocab, text, span):
    tok = tokenizer_lib.load_tokenizer(vocab)
    question = "언제?"
    enc = tok.encode(question, text)  # QA layout: [CLS] question [SEP] context [SEP]
    start = text.index(span)
    end = start + len(span)
    first = enc.char_to_token(start, 1)
    last = enc.char_to_token(end - 1, 1)
    assert first is not None and last is not None
    assert text[enc.offsets[first][0] : enc.offsets[last][1]] == span
    # character tags (KLUE-NER) -> tokens -> characters again
    tagged = {i for i in range(first, last + 1)}
    back = {c for i in tagged for c in range(*enc.offsets[i])}
    assert back == {c for c in range(start, end) if not text[c].isspace()}


def test_prepare_in_spawn_workers_matches_in_process(tmp_path, vocab):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n\n" + "\n".join(SENTENCES[::-1]) + "\n")
    out = {}
    for workers in (0, 2):  # 2: spawn workers rebuild the tokenizer from the saved options
        meta = prepare(
            [corpus], vocab, tmp_path / f"w{workers}", max_seq_len=32, num_workers=workers
        )
        source = PretrainingSource(tmp_path / f"w{workers}", "train")
        out[workers] = [source[i]["input_ids"] for i in range(len(source))]
        assert meta["splits"]["train"]["num_tokens"] > 0
    assert len(out[0]) == len(out[2])
    for a, b in zip(out[0], out[2], strict=True):
        np.testing.assert_array_equal(a, b)
    tok = tokenizer_lib.load_tokenizer(vocab)
    assert tok.token_to_id("다") in np.concatenate(out[0])  # the ending split off as a morpheme
