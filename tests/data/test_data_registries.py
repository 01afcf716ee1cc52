"""Contract tests over the data registries: every instance builder and every tokenizer kind.

Numpy and `tokenizers` only (objective modules are imported for their declared fields; nothing is
compiled): a small text, a vocabulary trained on it, shards prepared twice.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pathlib

import ml_collections
import numpy as np
import pytest

from bertjax import objectives
from bertjax.data import instances, tokenizer_kinds
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.prepare import prepare
from bertjax.data.source import PretrainingSource

L = 32
WORDS = "alpha beta gamma delta river stone light north quiet market garden winter".split()


def _text() -> str:
    """Twelve documents of six sentences, blank lines between documents."""
    rng = np.random.default_rng(0)
    documents = []
    for _ in range(12):
        sentences = [
            " ".join(rng.choice(WORDS, rng.integers(4, 12))).capitalize() + "." for _ in range(6)
        ]
        documents.append(" ".join(sentences))
    return "\n\n".join(documents) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(_text(), encoding="utf-8")
    return path


def _config(kind: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "model": {"vocab_size": 300, "entity_vocab_size": 0},
            "data": {"tokenizer": kind, "lowercase": True, "pretokenizer": "whitespace"},
        }
    )


@pytest.fixture(scope="module")
def vocabs(corpus, tmp_path_factory) -> dict[str, pathlib.Path]:
    """A vocabulary of every registered kind, trained on `corpus` with the pretraining config."""
    out = tmp_path_factory.mktemp("vocabs")
    return {
        kind: tokenizer_kinds.get(kind).train([corpus], out / kind, _config(kind))
        for kind in tokenizer_kinds.KINDS
    }


def _kind_for(builder) -> str:
    """The first tokenizer kind whose special tokens cover what `builder` needs."""
    for kind in tokenizer_kinds.KINDS:
        if set(builder.SPECIALS) <= set(tokenizer_kinds.get(kind).SPECIAL_TOKENS):
            return kind
    raise AssertionError(f"no tokenizer kind gives {builder.SPECIALS}")


def _digest(folder: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.npy"))
    }


def _inputs(builder, corpus: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """The corpus a builder reads, and its `prepare` options: the text, or for a builder with
    its own reader (parallel pairs) a TSV pairing each sentence with itself upper-cased."""
    if not hasattr(builder, "read_documents"):
        return corpus, {}
    sentences = [s.strip() + "." for s in corpus.read_text().split(".") if s.strip()]
    table = corpus.parent / "pairs.tsv"
    table.write_text("source\ttarget\n" + "".join(f"{s}\t{s.upper()}\n" for s in sentences))
    return table, {"max_target_len": L}


@pytest.mark.parametrize("name", sorted(instances.BUILDERS))
def test_instance_builder_contract(name, corpus, vocabs, tmp_path):
    builder = instances.get(name)
    vocab = vocabs[_kind_for(builder)]
    corpus, options = _inputs(builder, corpus)
    runs = [
        prepare(
            [corpus],
            vocab,
            tmp_path / f"run{k}",
            max_seq_len=L,
            eval_fraction=0.2,
            num_workers=0,
            chunk_chars=400 * (k + 1),
            instances=name,
            **options,
        )
        for k in range(2)
    ]
    again = prepare(
        [corpus],
        vocab,
        tmp_path / "again",
        max_seq_len=L,
        eval_fraction=0.2,
        num_workers=0,
        chunk_chars=400,
        instances=name,
        **options,
    )
    # deterministic: the same inputs give the same bytes; another chunking other instances
    # (builders of text; a pair is the same pair however the pairs are chunked)
    assert _digest(tmp_path / "run0") == _digest(tmp_path / "again")
    chunked = not hasattr(builder, "read_documents")
    assert (_digest(tmp_path / "run0") != _digest(tmp_path / "run1")) == chunked
    metadata = runs[0]
    assert metadata["instances"] == name and metadata["fields"] == list(builder.FIELDS)
    assert metadata["splits"]["train"]["num_examples"] > 10
    assert again["splits"] == metadata["splits"]
    for split in ("train", "eval"):
        shard = {f: np.load(tmp_path / "run0" / split / f"{f}-00000.npy") for f in builder.FIELDS}
        rows = {f: a.shape[0] for f, a in shard.items()}
        assert set(rows.values()) == {metadata["splits"][split]["num_examples"]}
        assert shard["input_ids"].shape[1:] == (L,)
    source = PretrainingSource(tmp_path / "run0", "train", vocab_path=vocab)
    examples = [source[i] for i in range(len(source))]
    assert all(tuple(e) == builder.EXAMPLE_FIELDS for e in examples)
    for field in builder.EXAMPLE_FIELDS:  # fixed shapes and dtypes across examples
        assert len({(e[field].shape, e[field].dtype) for e in examples}) == 1, field
    first = examples[0]
    assert first["input_ids"].shape == (L,) and first["attention_mask"].shape == (L,)
    lengths = source.lengths()
    assert lengths.min() >= 1 and lengths.max() <= L
    np.testing.assert_array_equal([int((e["attention_mask"] > 0).sum()) for e in examples], lengths)
    # what each objective declaring this builder (objectives.OBJECTIVES) reads is there
    declared = [o for o, entry in objectives.OBJECTIVES.items() if name in entry.instances]
    assert declared, name
    for objective in declared:
        module = importlib.import_module(objectives.OBJECTIVES[objective].module)
        assert set(module.EXAMPLE_FIELDS) <= set(builder.EXAMPLE_FIELDS), objective


def test_a_builder_without_its_special_tokens_is_refused(corpus, vocabs, tmp_path):
    for name in instances.BUILDERS:
        builder = instances.get(name)
        for kind, vocab in vocabs.items():
            if set(builder.SPECIALS) <= set(tokenizer_kinds.get(kind).SPECIAL_TOKENS):
                continue
            with pytest.raises(ValueError, match=f"config.data.instances={name!r} needs"):
                prepare([corpus], vocab, tmp_path / f"{name}-{kind}", max_seq_len=L, instances=name)
            assert not (tmp_path / f"{name}-{kind}").exists()  # refused before any data work


@pytest.mark.parametrize("kind", sorted(tokenizer_kinds.KINDS))
def test_tokenizer_kind_contract(kind, corpus, vocabs, tmp_path):
    entry = tokenizer_kinds.get(kind)
    vocab = vocabs[kind]
    assert vocab.name == entry.VOCAB_NAME
    assert tokenizer_lib.tokenizer_kind(vocab) == kind
    # trained twice, the same bytes
    again = entry.train([corpus], tmp_path / "again", _config(kind))
    for path in entry.files(vocab):
        assert path.read_bytes() == (again.parent / path.name).read_bytes(), path.name
    tokens = tokenizer_lib.read_vocab(vocab)
    assert 50 < len(tokens) <= 300 and len(set(tokens)) == len(tokens)
    # saved files load back (copied elsewhere, as a model directory does) with the same ids
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in entry.files(vocab):
        (copy / path.name).write_bytes(path.read_bytes())
    tok = tokenizer_lib.load_tokenizer(vocab)
    loaded = tokenizer_lib.load_tokenizer(copy / vocab.name)
    assert isinstance(tok.model, entry.MODEL)
    assert tokenizer_kinds.of_tokenizer(loaded) is entry
    text = "Alpha river. Quiet garden winter market."
    ids = tok.encode(text, add_special_tokens=False).ids
    assert ids == loaded.encode(text, add_special_tokens=False).ids
    assert len(ids) >= 6 and max(ids) < len(tokens)
    decoded = tok.decode(ids).replace(" ", "").lower()
    assert decoded == text.replace(" ", "").lower()
    # special tokens: the kind's, by id, kept whole when written in text
    special = tokenizer_lib.special_token_ids(loaded, str(vocab))
    assert set(special) == set(entry.SPECIAL_TOKENS)
    for key, token in entry.SPECIAL_TOKENS.items():
        assert tokens[special[key]] == token
        assert (
            loaded.encode(f"river {token} stone", add_special_tokens=False).ids.count(special[key])
            == 1
        )


def test_prepare_and_tokenizer_take_the_pretraining_config(corpus, tmp_path, capsys, s3):
    """`bertjax tokenizer` and `bertjax prepare` with a GPT config make what `bertjax pretrain`
    would: a byte-level BPE vocabulary and lm_blocks shards; the same from a corpus glob in a
    bucket into a workdir in the bucket (moto's S3 server on 127.0.0.1)."""
    from bertjax.cli import main
    from tests.conftest import REPO

    config = ["--config", str(REPO / "configs" / "gpt" / "test.py")]
    override = f"--config.data.corpus={corpus}"
    assert main(["tokenizer", *config, "--out", str(tmp_path / "tok"), override]) == 0
    assert main(["prepare", *config, "--workdir", str(tmp_path / "w"), override]) == 0
    vocab = tmp_path / "tok" / "vocab.json"  # the same code trained the same vocabulary
    assert vocab.read_bytes() == (tmp_path / "w" / "tokenizer" / "vocab.json").read_bytes()
    source = PretrainingSource(tmp_path / "w" / "data", "train", vocab_path=vocab)
    assert source.instances == "lm_blocks" and source.max_seq_len == 16 and len(source) > 10
    s3.put(str(corpus), "bertjax-test/registries/corpus/text.txt")
    url, glob = (
        "s3://bertjax-test/registries",
        "--config.data.corpus=s3://bertjax-test/*/corpus/*.txt",
    )
    assert main(["prepare", *config, "--workdir", f"{url}/w", glob]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["data"] == f"{url}/w/data"
    local = [p for p in (tmp_path / "w").rglob("*") if p.is_file() and "corpus" not in p.parts]
    for path in local:
        name = path.relative_to(tmp_path / "w").as_posix()
        if name != "data/metadata.json":  # it names the corpus files
            assert s3.cat(f"{url}/w/{name}") == path.read_bytes(), name
    # a flag of the file mode together with --config: one line naming both
    assert main(["prepare", *config, "--workdir", str(tmp_path / "x"), "--vocab", "v.txt"]) == 2
    assert main(["tokenizer", *config, "--out", str(tmp_path / "y"), "--vocab-size", "9"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "bertjax prepare: error: --vocab cannot be combined with --config; set the config's "
        "fields instead (config.data.corpus, config.data.vocab, config.data.*, as "
        "--config.GROUP.FIELD=VALUE)",
        "bertjax tokenizer: error: --vocab-size cannot be combined with --config; set the "
        "config's fields instead (config.data.corpus, config.model.vocab_size, "
        "config.data.tokenizer, ..., as --config.GROUP.FIELD=VALUE)",
    ]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
