"""One policy for invalid UTF-8 in every text reader (`bertjax.data.text.TextFile`): repaired as
U+FFFD and counted per file by default, refused with file:line:column under strict input."""

import logging

import pytest

from bertjax.cli import main
from bertjax.data import entities, text, tokenizer
from bertjax.inference import embed
from bertjax.tasks import classification, korean, qa, tagging
from tests.conftest import REPO

BAD = "caf\xe9".encode("latin-1")  # "café" in Latin-1: the byte 0xE9 is not UTF-8


def _corpus(path):
    return list(text.iter_documents(path, text.Statistics()))


def _table(path):
    return list(classification.read_text_classification(path, text_a="s", label="l"))


# name -> (file name, content with one invalid byte, the reader of the path)
READERS = {
    "corpus": ("c.txt", b"One line. Two.\nand " + BAD + b" au lait.\n", _corpus),
    "tokenizer": ("t.txt", b"plain\nword " + BAD + b"\n", lambda p: list(tokenizer.line_pieces([p]))),
    "tsv": ("a.tsv", b"s\tl\ngood " + BAD + b"\t1\n", _table),
    "csv": ("a.csv", b"s,l\ngood " + BAD + b",1\n", _table),
    "jsonl": ("a.jsonl", b'{"s": "x", "l": 1}\n{"s": "' + BAD + b'", "l": 1}\n', _table),
    "conll": ("a.conll", b"EU B-ORG\nword " + BAD + b" O\n", tagging.read_conll),
    "squad": ("q.json", b'{"data": [\n{"x": "' + BAD + b'", "title": "t", "paragraphs": []}]}', qa.read_squad),
    "klue-ner": ("k.tsv", b"\xea\xb0\x80\tO\n\xe9\tO\n", korean.read_klue_ner),
    "table corpus": ("t.csv", b"text\nsome " + BAD + b"\n", lambda p: list(korean.iter_table_documents(p, "text"))),
    "predict input": ("p.txt", b"fine\nword " + BAD + b"\n", lambda p: list(classification.iter_text_lines(p))),
    "embed input": ("e.txt", b"fine\nword " + BAD + b"\n", lambda p: list(embed.read_lines(p))),
    "gazetteer": ("g.txt", b"Seoul\nword " + BAD + b"\n", entities.read_gazetteer),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(READERS))
def test_every_reader_repairs_and_reports_by_default_and_refuses_when_strict(
    kind, tmp_path, caplog
):
    name, content, read = READERS[kind]
    at = content.index(b"\xe9")
    line, column = content[:at].count(b"\n") + 1, at - content.rfind(b"\n", 0, at)
    path = tmp_path / name
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="bertjax.data.text"):
        read(path)
    [record] = [r for r in caplog.records if r.name == "bertjax.data.text"]
    message = record.getMessage()
    assert message.startswith(f"{path}: 1 lines held invalid UTF-8, repaired as U+FFFD")
    assert f"(the first at line {line}, column {column})" in message and "strict_utf8" in message
    assert record.summary  # repeated under a job's end summary
    with text.utf8_policy(strict=True), pytest.raises(ValueError) as refused:
        read(path)
    assert str(refused.value).startswith(f"{path}:{line}:{column}: invalid UTF-8 in ")


def test_repaired_text_and_line_ends(tmp_path):
    """U+FFFD for each invalid sequence, a BOM dropped, CRLF read as LF, a long line in pieces
    with a character cut between two pieces decoded whole, an unfinished last sequence repaired."""
    path = tmp_path / "x.txt"
    path.write_bytes(b"\xef\xbb\xbfa\xff\xfeb\r\n" + "é".encode() * 3 + b"\n\xc3")
    with text.TextFile(path, report=False) as f:
        assert list(f) == ["a\ufffd\ufffdb\n", "ééé\n", "\ufffd"]
        assert (f.repaired_lines, f.first_repair) == (2, (1, 5))  # bytes: the BOM counts
    with text.TextFile(path) as f:
        pieces = list(f.pieces(max_bytes=3))
    assert pieces[3:6] == [("é", False), ("éé", True), ("\n", True)]


def test_the_commands_take_the_policy_from_the_flag_or_the_config(tmp_path, capsys, caplog):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(b"plain line\n" + BAD + b" au lait\n")
    assert main(["tokenizer", str(corpus), "--out", str(tmp_path / "a"), "--vocab-size=40"]) == 0
    assert f"{corpus}: 1 lines held invalid UTF-8" in caplog.text
    args = ["tokenizer", str(corpus), "--out", str(tmp_path / "b"), "--strict-utf8"]
    assert main(args) == 2
    assert f"bertjax tokenizer: error: {corpus}:2:4: invalid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # no output folder left behind
    # pretrain's vocabulary (no config.data.vocab): config.data.strict_utf8
    config = ["--config", str(REPO / "configs" / "test.py"), "--out", str(tmp_path / "c")]
    config += [f"--config.data.corpus={corpus}", "--config.data.strict_utf8=True"]
    assert main(["tokenizer", *config]) == 2
    assert f"{corpus}:2:4: invalid UTF-8 in a tokenizer training file" in capsys.readouterr().err
    assert main(["tokenizer", *config, "--strict-utf8"]) == 2
    assert "--strict-utf8 cannot be combined with --config" in capsys.readouterr().err
