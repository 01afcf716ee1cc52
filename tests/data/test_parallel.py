"""Parallel data (tables, aligned files, the KorSTS/STS-B ko-en pairs) and the `sentencepiece`
tokenizer kind against transformers' MarianTokenizer."""

import json
import logging
import pathlib
import shutil

import pytest

from bertjax.data import parallel
from bertjax.data.text import Statistics
from bertjax.data.tokenizer_kinds import sentencepiece as sp

COLUMNS = {"source_column": "ko", "target_column": "en"}


def test_tables_and_aligned_files_skip_bad_rows_naming_file_and_line(tmp_path, caplog):
    tsv = tmp_path / "a.tsv"
    tsv.write_text('ko\ten\n가 "나"\tA "b"\n한 칸\n\t빈\n다\tC\n', encoding="utf-8")
    csv = tmp_path / "b.csv"
    csv.write_text('ko,en\n"라, 마","D, e"\n바,\n', encoding="utf-8")
    jsonl = tmp_path / "c.jsonl"
    rows = [{"ko": "사", "en": "F"}, "not json", {"ko": "아"}]
    jsonl.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    stats = Statistics()
    with caplog.at_level(logging.WARNING):
        pairs = list(parallel.read_pairs([tsv, csv, jsonl], COLUMNS, stats))
    assert pairs == [('가 "나"', 'A "b"'), ("다", "C"), ("라, 마", "D, e"), ("사", "F")]
    assert stats.rows_skipped_bad == 5
    for where in (f"{tsv}:3", f"{tsv}:4", f"{csv}:3", f"{jsonl}:2", f"{jsonl}:3"):
        assert where in caplog.text, where
    ko, en = tmp_path / "x.ko", tmp_path / "x.en"
    ko.write_text("하나\n\n셋\n", encoding="utf-8")
    en.write_text("one\ntwo\nthree\n", encoding="utf-8")
    stats = Statistics()
    assert list(parallel.read_pairs([ko, en], {"aligned": True}, stats)) == [
        ("하나", "one"),
        ("셋", "three"),
    ]
    assert stats.rows_skipped_bad == 1 and f"{ko}:2" in caplog.text
    en.write_text("one\ntwo\nthree\nfour\n", encoding="utf-8")
    with pytest.raises(ValueError, match="x.en has more lines than .*x.ko"):
        list(parallel.read_pairs([ko, en], {"aligned": True}))
    with pytest.raises(ValueError, match="config.data.reader has unknown fields"):
        list(parallel.read_pairs([tsv], {"source": "ko"}))


def test_korsts_rows_pair_with_their_stsb_rows(shared_data, tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    for ko_name, en_name in parallel.KORSTS_FILES.values():
        for name in (ko_name, en_name):  # the first rows of each file, one id changed
            lines = (shared_data / name).read_text(encoding="utf-8").splitlines()[:6]
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    ko_dev = root / parallel.KORSTS_FILES["dev"][0]
    lines = ko_dev.read_text(encoding="utf-8").splitlines()
    cells = lines[3].split("\t")
    cells[3] = "9999"
    lines[3] = "\t".join(cells)
    ko_dev.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("BERTJAX_DATA", str(root))
    with caplog.at_level(logging.WARNING):
        counts = parallel.write_korsts_pairs(tmp_path / "out")
    assert counts["train"]["mismatched"] == 0 and counts["dev"]["mismatched"] == 1
    assert f"{ko_dev}:4" in caplog.text
    pairs = list(parallel.read_pairs([tmp_path / "out" / "train.tsv"], COLUMNS))
    assert pairs[0] == ("비행기가 이륙하고 있다.", "A plane is taking off.")
    assert len(pairs) == len(set(pairs)) == counts["train"]["pairs"]
    for split, rows in (("train", 5), ("dev", 4)):  # two pairs a row; the mismatched one out
        assert counts[split]["pairs"] + counts[split]["duplicates"] == 2 * rows


@pytest.fixture(scope="module")
def ko_en_tokenizer(tmp_path_factory) -> tuple[pathlib.Path, list[str]]:
    from tests.conftest import data_dir

    if not data_dir().is_dir():
        pytest.skip("real data folder is absent (set BERTJAX_DATA)")
    out = tmp_path_factory.mktemp("ko-en")
    parallel.write_korsts_pairs(out)
    train = list(parallel.read_pairs([out / "train.tsv"], COLUMNS))[:3000]
    dev = list(parallel.read_pairs([out / "dev.tsv"], COLUMNS))[:60]
    vocab = sp.train_sentencepiece((t for p in train for t in p), out / "tok", vocab_size=2000)
    return vocab, [t for p in dev for t in p]


def test_sentencepiece_files_load_in_marian_tokenizer_and_encode_alike(ko_en_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab, texts = ko_en_tokenizer
    texts += ["  two  spaces ", "ＡＢＣ ① 稀有한 字", "a </s> b <unk>", ""]
    copy = tmp_path / "model"  # as a model directory holds them
    copy.mkdir()
    for path in sp.files(vocab):
        shutil.copyfile(path, copy / path.name)
    marian = transformers.MarianTokenizer.from_pretrained(copy)
    ours = sp.load(copy / sp.VOCAB_NAME)
    ids = json.loads((copy / "vocab.json").read_text(encoding="utf-8"))
    assert (ids["</s>"], ids["<unk>"], ids["<pad>"]) == (0, 1, len(ids) - 1)
    assert (marian.eos_token_id, marian.pad_token_id) == (0, len(ids) - 1)
    target_side = sp.load(copy / sp.VOCAB_NAME, side="target")
    for text in texts:
        assert ours.encode(text).ids == marian(text)["input_ids"], text
        labels = marian(text_target=text)
        assert target_side.encode(text).ids == labels.get("labels", labels["input_ids"]), text
    ko = texts[0]
    encoded = ours.encode(ko).ids
    assert ours.decode(encoded) == marian.decode(encoded, skip_special_tokens=True) == ko
