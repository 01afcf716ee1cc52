"""Pretraining data preparation: instance layout, NSP, eval split, determinism, bad input."""

import json
import logging
import pickle
import random
import resource
import string
import textwrap
import time

import numpy as np
import pytest

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.instances.nsp_pairs import truncate_pair
from bertjax.data.packing import PackedSource, pack_plan
from bertjax.data.prepare import prepare
from bertjax.data.shards import SPLITS
from bertjax.data.source import PretrainingSource
from bertjax.data.text import split_sentences

L = 32
NUM_DOCS = 40
WORDS_PER_DOC = 6
VOCAB_SIZE = 1000


def _doc_words(doc: int) -> list[str]:
    """Words used only by document `doc`, so every token names its document."""
    rng = random.Random(doc)
    return ["".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(WORDS_PER_DOC)]


def _document_text(doc: int, rng: random.Random) -> str:
    words = _doc_words(doc)
    sentences = []
    for _ in range(rng.randint(2, 9)):
        sentence = " ".join(rng.choices(words, k=rng.randint(3, 12)))
        sentences.append(sentence.capitalize() + ".")
    # wrap the paragraph over lines, as in the Gutenberg corpus
    return textwrap.fill(" ".join(sentences), width=60)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two files of blank-line separated documents, and a vocabulary trained on them."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    files = []
    for k in range(2):
        docs = range(k * NUM_DOCS // 2, (k + 1) * NUM_DOCS // 2)
        path = root / f"part{k}.txt"
        path.write_text("\n\n".join(_document_text(d, rng) for d in docs) + "\n")
        files.append(path)
    vocab = tokenizer_lib.train_wordpiece(
        files, root / "vocab", vocab_size=VOCAB_SIZE, min_frequency=1
    )
    return files, vocab


def _prepare(corpus, out, **kwargs):
    files, vocab = corpus
    kwargs = {"max_seq_len": L, "num_workers": 0, "chunk_chars": 2000, **kwargs}
    return prepare(files, vocab, out, **kwargs)


def _token_docs(vocab_path) -> dict[int, int]:
    """Token id -> document, for the whole-word tokens of the synthetic corpus."""
    tok = tokenizer_lib.load_tokenizer(vocab_path)
    owner = {}
    for doc in range(NUM_DOCS):
        for word in _doc_words(doc):
            ids = tok.encode(word, add_special_tokens=False).ids
            if len(ids) == 1:  # words drawn in the corpus are whole tokens
                owner[ids[0]] = doc
    return owner


def _segments(example):
    ids = example["input_ids"]
    length = int(example["attention_mask"].sum())
    first_sep = int(np.argmax(example["token_type_ids"][:length] == 1)) - 1
    return ids[1:first_sep], ids[first_sep + 1 : length - 1]


def test_instance_layout(corpus, tmp_path):
    metadata = _prepare(corpus, tmp_path)
    source = PretrainingSource(tmp_path, "train")
    assert len(source) == metadata["splits"]["train"]["num_examples"] > 50
    special = metadata["special_ids"]
    vocab = tokenizer_lib.read_vocab(corpus[1])
    for i in range(len(source)):
        ex = source[i]
        assert {k: (v.dtype, v.shape) for k, v in ex.items()} == {
            "input_ids": (np.int32, (L,)),
            "token_type_ids": (np.int32, (L,)),
            "attention_mask": (np.int32, (L,)),
            "next_sentence_label": (np.int32, ()),
            "word_starts": (bool, (L,)),
        }
        ids, types, n = ex["input_ids"], ex["token_type_ids"], int(ex["attention_mask"].sum())
        assert 5 <= n <= L and ex["attention_mask"][:n].all()
        a, b = _segments(ex)
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) + 3 == n
        assert ids[0] == special["cls"] and ids[len(a) + 1] == special["sep"]
        assert ids[n - 1] == special["sep"] and (ids[n:] == special["pad"]).all()
        assert not np.isin(np.concatenate([a, b]), list(special.values())).any()
        assert (types[: len(a) + 2] == 0).all() and (types[len(a) + 2 : n] == 1).all()
        assert (types[n:] == 0).all()
        expected = [i < n and not vocab[t].startswith("##") and vocab[t][0] != "[" for i, t in
                    enumerate(ids)]  # fmt: skip
        np.testing.assert_array_equal(ex["word_starts"], expected)


def test_nsp_labels_and_eval_split_follow_documents(corpus, tmp_path):
    metadata = _prepare(corpus, tmp_path, eval_fraction=0.1)
    owner = _token_docs(corpus[1])
    docs_of = {}
    labels = []
    for split in SPLITS:
        source = PretrainingSource(tmp_path, split)
        docs_of[split] = set()
        for i in range(len(source)):
            ex = source[i]
            a, b = _segments(ex)
            doc_a = {owner[t] for t in a.tolist() if t in owner}
            doc_b = {owner[t] for t in b.tolist() if t in owner}
            assert len(doc_a) == 1 and len(doc_b) == 1  # one document per segment
            same = doc_a == doc_b
            assert same == (ex["next_sentence_label"] == 0)  # 0: B follows A; 1: random
            docs_of[split] |= doc_a | doc_b
            labels.append(int(ex["next_sentence_label"]))
    assert docs_of["eval"] and not docs_of["eval"] & docs_of["train"]
    assert metadata["splits"]["eval"]["num_documents"] == len(docs_of["eval"]) == 4
    assert 0.3 < np.mean(labels) < 0.75


def test_deterministic_from_seed_and_independent_of_workers(corpus, tmp_path):
    def arrays(out):
        source = PretrainingSource(out, "train")
        return np.stack([source[i]["input_ids"] for i in range(len(source))])

    _prepare(corpus, tmp_path / "a", seed=3)
    _prepare(corpus, tmp_path / "b", seed=3, num_workers=2)
    _prepare(corpus, tmp_path / "c", seed=4)
    np.testing.assert_array_equal(arrays(tmp_path / "a"), arrays(tmp_path / "b"))
    c = arrays(tmp_path / "c")
    assert c.shape != arrays(tmp_path / "a").shape or (c != arrays(tmp_path / "a")).any()


def test_shards_metadata_and_vocab_check(corpus, tmp_path, shared_data):
    metadata = _prepare(corpus, tmp_path, shard_size=16)
    train = metadata["splits"]["train"]
    assert train["shards"][:-1] == [16] * (len(train["shards"]) - 1)
    assert sum(train["shards"]) == train["num_examples"]
    on_disk = json.loads((tmp_path / "metadata.json").read_text())
    assert on_disk == metadata
    assert (
        metadata["vocab_size"] == len(tokenizer_lib.read_vocab(corpus[1]))
        and metadata["dtypes"]["input_ids"] == "uint16"
    )
    ids = np.load(tmp_path / "train" / "input_ids-00000.npy", mmap_mode="r")
    assert ids.shape == (16, L) and ids.dtype == np.uint16
    assert np.load(tmp_path / "train" / "word_starts-00000.npy").shape == (16, L // 8)
    source = PretrainingSource(tmp_path, "train", vocab_path=corpus[1])
    source[len(source) - 1]
    assert len(pickle.dumps(source)) < 10_000  # memory maps are not pickled
    other = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    with pytest.raises(ValueError, match="vocabulary mismatch.*bert-base-uncased-vocab.txt"):
        PretrainingSource(tmp_path, "train", vocab_path=other)
    with pytest.raises(FileExistsError, match="not empty"):
        _prepare(corpus, tmp_path)
    with pytest.raises(ValueError, match="max_seq_len"):
        _prepare(corpus, tmp_path / "x", max_seq_len=4)


def test_wikiextractor_format_and_documents_per_file(corpus, tmp_path):
    rng = random.Random(1)
    wiki = tmp_path / "wiki.txt"
    blocks = [f'<doc id="{d}" url="https://x?curid={d}" title="T{d}">\n{_document_text(d, rng)}'
              f"\n\n{_document_text(d, rng)}\n</doc>" for d in range(6)]  # fmt: skip
    wiki.write_text("\n".join(blocks) + "\n")
    metadata = prepare([wiki], corpus[1], tmp_path / "w", max_seq_len=L, num_workers=0)
    assert metadata["statistics"]["documents"] == 6
    vocab = tokenizer_lib.read_vocab(corpus[1])
    source = PretrainingSource(tmp_path / "w", "train")
    text = " ".join(vocab[t] for i in range(len(source)) for t in source[i]["input_ids"])
    assert "url" not in text and "curid" not in text and "<" not in text
    # one file = one document: 20 documents become 1 per file
    metadata = _prepare(corpus, tmp_path / "f", documents_per_file=True)
    assert metadata["statistics"]["documents"] == 2


def test_bad_input_is_repaired_or_skipped_and_counted(corpus, tmp_path, caplog):
    rng = random.Random(2)
    good = tmp_path / "good.txt"
    good.write_text(_document_text(0, rng) + "\n\n" + _document_text(1, rng) + "\n")
    bad_utf8 = tmp_path / "bad_utf8.txt"
    bad_utf8.write_bytes(_document_text(2, rng).encode() + b"\n\xff\xfe\xc3 Broken bytes. Ok.\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    binary = tmp_path / "image.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    single = tmp_path / "single.txt"
    single.write_text("Only one sentence here.\n\nAnd another lonely one.\n\n\n")
    files = [good, bad_utf8, empty, binary, single]
    with caplog.at_level(logging.WARNING, logger="bertjax.data"):
        metadata = prepare(files, corpus[1], tmp_path / "out", max_seq_len=L, num_workers=0)
    stats = metadata["statistics"]
    assert stats["files"] == 5 and stats["files_empty"] == 1 and stats["files_skipped_binary"] == 1
    assert stats["lines_repaired_utf8"] == 1
    assert stats["documents_skipped_single_sentence"] == 2
    assert stats["documents"] == 5
    assert (
        metadata["splits"]["train"]["num_documents"] + metadata["splits"]["eval"]["num_documents"]
        == 3
    )
    assert "image.bin" in caplog.text and "binary" in caplog.text
    assert metadata["splits"]["train"]["num_examples"] > 0
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        prepare([tmp_path / "nothing-here*.txt"], corpus[1], tmp_path / "o2")


@pytest.mark.slow
def test_ten_megabyte_line_is_cut_not_blown_up(corpus, tmp_path):
    rng = random.Random(3)
    path = tmp_path / "long.txt"
    with open(path, "w") as f:
        f.write(_document_text(5, rng) + "\n\n")
        f.write("x" * (10 << 20) + " End of the long line. Next one.\n")
    start, rss = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    metadata = prepare([path], corpus[1], tmp_path / "o", max_seq_len=L, num_workers=0)
    assert time.perf_counter() - start < 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 400_000  # KiB
    stats = metadata["statistics"]
    assert stats["lines_cut_long"] == 1 and stats["sentences_cut_long"] >= 1000
    assert stats["documents_cut_long"] >= 10
    assert metadata["splits"]["train"]["num_examples"] > 0


def test_split_sentences():
    text = 'Mr. Smith met J. R. Tolkien. "Is it late?" She asked. no. It was 1990. 2001 came!'
    assert split_sentences(text) == [
        "Mr. Smith met J. R. Tolkien.",
        '"Is it late?"',
        "She asked. no.",
        "It was 1990.",
        "2001 came!",
    ]
    assert split_sentences("서울은 큽니다. 부산은 바다가 있습니다.") == [
        "서울은 큽니다.",
        "부산은 바다가 있습니다.",
    ]


def test_truncate_pair_keeps_the_limit_and_trims_the_longer():
    rng = random.Random(0)
    a, b = truncate_pair(list(range(100)), list(range(100, 110)), 50, rng)
    assert len(a) + len(b) == 50 and b == list(range(100, 110))
    assert a == list(range(a[0], a[0] + 40))  # a contiguous span, cut at both ends at random
    assert 0 < a[0] < 60


def test_real_wikipedia_slice(shared_data, tmp_path):
    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    wiki = shared_data / "pretrain-wikipedia-sample" / "wiki_00.txt"
    metadata = prepare([wiki], vocab, tmp_path, max_seq_len=128, num_workers=0)
    train = metadata["splits"]["train"]
    assert train["num_examples"] > 1000 and metadata["splits"]["eval"]["num_documents"] >= 1
    assert 0.45 < train["num_random_next"] / train["num_examples"] < 0.6
    source = PretrainingSource(tmp_path, "train", vocab_path=vocab)
    lengths = np.array([source[i]["attention_mask"].sum() for i in range(0, len(source), 7)])
    assert lengths.max() == 128 and lengths.mean() > 100
    assert metadata["statistics"]["documents"] > 30


def test_pack_plan_places_every_instance_once_within_the_limits():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([np.full(50, 128), rng.integers(5, 128, 400), [1, 127, 64, 64]])
    plan = pack_plan(lengths, capacity=128, max_per_row=3)
    members = plan[plan >= 0]
    assert sorted(members.tolist()) == list(range(len(lengths)))
    assert ((plan >= 0).sum(axis=1) <= 3).all()
    row_tokens = np.where(plan >= 0, lengths[np.maximum(plan, 0)], 0).sum(axis=1)
    assert row_tokens.max() <= 128
    # Best fit packs tightly: close to the bound of total tokens over the capacity.
    assert len(plan) <= 1.1 * np.ceil(lengths.sum() / 128) + 1
    assert np.array_equal(pack_plan(lengths, 128, 3), plan)  # deterministic
    assert (pack_plan(lengths, 128, 1) >= 0).sum(axis=1).max() == 1  # 1: no packing
    with pytest.raises(ValueError, match=r"in \[1, 128\]"):
        pack_plan([129], 128, 3)


def test_packed_source_concatenates_instances_with_segments(corpus, tmp_path):
    out = tmp_path / "prepared"
    _prepare(corpus, out, max_seq_len=64, short_seq_prob=0.5)
    source = PretrainingSource(out, "train")
    packed = PackedSource(source, max_per_row=3)
    assert len(packed) < len(source)
    seen = 0
    for row in range(len(packed)):
        item = packed[row]
        members = [m for m in packed.plan[row] if m >= 0]
        seen += len(members)
        assert item["nsp_weights"].tolist() == [1.0] * len(members) + [0.0] * (3 - len(members))
        for slot, member in enumerate(members):
            original = source[int(member)]
            n = int(original["attention_mask"].sum())
            start = int(item["nsp_positions"][slot])
            span = slice(start, start + n)
            assert (item["attention_mask"][span] == slot + 1).all()
            for field in ("input_ids", "token_type_ids", "word_starts"):
                np.testing.assert_array_equal(item[field][span], original[field][:n])
            assert item["next_sentence_label"][slot] == original["next_sentence_label"]
        assert (item["input_ids"][item["attention_mask"] == 0] == 0).all()
    assert seen == len(source)
    assert packed.real_tokens == sum(
        int(source[i]["attention_mask"].sum()) for i in range(len(source))
    )
