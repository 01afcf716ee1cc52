"""Tests for the task kinds (`bertjax.tasks.classification`, `.tagging`, `.qa`): readers, featurizers
and QA post-processing."""

import functools
import logging

import numpy as np
import pytest

from bertjax.data.tokenizer import load_tokenizer
from bertjax.tasks import classification, common, qa, tagging

# A tiny vocabulary for hand-checked layouts: ids 0-4 are the specials, then 5, 6, ...
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_VOCAB += ["the", "cat", "##s", "sat", "hu", "##ge", "##ly", "on", "mat"]
PAD, UNK, CLS, SEP = 0, 1, 2, 3
THE, CAT, S, SAT, HU, GE, LY, ON, MAT = range(5, 14)


@pytest.fixture
def tiny_tokenizer(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return load_tokenizer(path)


@pytest.fixture
def uncased(shared_data):
    return load_tokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt", lowercase=True)


@functools.cache
def _squad(path: str, split=None, seed=0):
    return qa.read_squad(path, split=split, seed=seed)


# ----------------------------------------------------------------------------- text classification


def test_reads_glue_files_with_source_counts(shared_data):
    read = classification.read_text_classification
    sst_train = read(shared_data / "sst2" / "train.tsv", text_a="sentence", label="label")
    sst_dev = read(shared_data / "sst2" / "dev.tsv", text_a="sentence", label="label")
    # SOURCE.md: train 67,349 (0: 29,780 / 1: 37,569); dev 872 (428 / 444).
    assert [len(sst_train), len(sst_dev)] == [67349, 872]
    assert [e.label for e in sst_train].count("1") == 37569
    assert [e.label for e in sst_dev].count("0") == 428
    assert sst_train[0].text_a == "hide new secretions from the parental units "
    assert sst_train[0].source.endswith("train.tsv:2")

    pair = dict(text_a="sentence1", text_b="sentence2", label="label")
    rte = read(shared_data / "glue-rte" / "train.tsv", **pair)
    assert len(rte) == 2490 and [e.label for e in rte].count("entailment") == 1249
    assert rte[0].text_b == "Weapons of Mass Destruction Found in Iraq."
    assert len(read(shared_data / "glue-rte" / "dev.tsv", **pair)) == 277

    stsb = dict(text_a="sentence1", text_b="sentence2", label="score")
    sts_train = read(shared_data / "glue-stsb" / "train.tsv", **stsb)
    assert [len(sts_train), len(read(shared_data / "glue-stsb" / "dev.tsv", **stsb))] == [
        5749,
        1500,
    ]
    scores = np.array([float(e.label) for e in sts_train])
    assert scores.min() == 0.0 and scores.max() == 5.0


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\ngood row\t1\nbad\trow\t0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:3: expected 2 columns, found 3"):
        classification.read_text_classification(path, text_a="sentence", label="label")


def test_reads_csv_jsonl_bom_index_columns_and_skip_rows(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text('\ufeffjunk line\n"quoted"\tb\t1\nx\ty\t0\n', encoding="utf-8")
    examples = classification.read_text_classification(
        tsv, text_a=0, text_b=1, label=2, header=False, skip_rows=1
    )
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ('"quoted"', "b", "1"),  # TSV keeps quotes: csv.QUOTE_NONE
        ("x", "y", "0"),
    ]
    assert examples[1].source == f"{tsv}:3"

    csv_path = tmp_path / "t.csv"
    csv_path.write_text('\ufefftext,label\n"a, b",pos\n', encoding="utf-8")
    (example,) = classification.read_text_classification(csv_path, text_a="text", label="label")
    assert (example.text_a, example.label) == ("a, b", "pos")

    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"s": "hi", "y": 1}\n\n{"s": "yo"}\n', encoding="utf-8")
    (example, unlabelled) = classification.read_text_classification(jsonl, text_a="s")
    assert (example.text_a, example.label, unlabelled.text_a) == ("hi", None, "yo")
    with pytest.raises(ValueError, match=rf"{jsonl}:3: missing key 'y'"):
        classification.read_text_classification(jsonl, text_a="s", label="y")


def test_label_map_sorted_and_unknown_label_lists_known_labels(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("s\tl\na\tpos\nb\tneg\nc\tneutral\n", encoding="utf-8")
    examples = classification.read_text_classification(path, text_a="s", label="l")
    assert common.build_label_map(examples) == {"neg": 0, "neutral": 1, "pos": 2}
    message = rf"{path}:4: unknown label 'neutral'; known labels: \['neg', 'pos'\]"
    with pytest.raises(ValueError, match=message):
        common.build_label_map(examples, labels=["neg", "pos"])


def test_classification_layout_and_longest_first_truncation(tiny_tokenizer):
    examples = [
        classification.TextExample(
            "the cat sat", "the cats", "1", "x:2"
        ),  # a = 3 pieces, b = 3 pieces
        classification.TextExample("cat", "mat", "0", "x:3"),
    ]
    features = classification.featurize_text_classification(
        examples, tiny_tokenizer, max_len=8, label_map={"0": 0, "1": 1}
    )
    # Room for 8 - 3 = 5 pieces: 3 + 3 is one too many; on a tie B loses its last piece.
    ids = features.arrays["input_ids"]
    np.testing.assert_array_equal(ids[0], [CLS, THE, CAT, SAT, SEP, THE, CAT, SEP])
    np.testing.assert_array_equal(ids[1], [CLS, CAT, SEP, MAT, SEP, PAD, PAD, PAD])
    np.testing.assert_array_equal(features.arrays["token_type_ids"][1], [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(features.arrays["attention_mask"][1], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(features.arrays["labels"], [1, 0])
    assert all(a.dtype == np.int32 and a.shape[0] == 2 for a in features.arrays.values())
    assert features.stats == {"num_examples": 2, "num_truncated": 1}


def _pop_longest(len_a, len_b, budget):
    """Reference: BERT's loop, popping from the longer segment (B on ties)."""
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def test_longest_first_matches_the_pop_loop():
    for len_a in range(12):
        for len_b in range(12):
            for budget in range(2, 14):
                expected = _pop_longest(len_a, len_b, budget)
                assert classification._longest_first(len_a, len_b, budget) == expected


def test_regression_labels_are_float32_and_unlabelled_sets_have_none(shared_data, uncased):
    stsb = dict(text_a="sentence1", text_b="sentence2", label="score")
    dev = classification.read_text_classification(shared_data / "glue-stsb" / "dev.tsv", **stsb)[
        :50
    ]
    features = classification.featurize_text_classification(
        dev, uncased, max_len=64, regression=True
    )
    assert features.arrays["labels"].dtype == np.float32
    np.testing.assert_allclose(features.arrays["labels"][:2], [5.0, 4.75])
    assert features.arrays["input_ids"][0, 0] == 101 and features.arrays["input_ids"].shape == (
        50,
        64,
    )
    unlabelled = [classification.TextExample(e.text_a, e.text_b, None, e.source) for e in dev]
    assert "labels" not in classification.featurize_text_classification(unlabelled, uncased).arrays


# ----------------------------------------------------------------------------- tagging


def test_iob1_to_iob2_hand_case():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "B-MISC", "I-MISC"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "O", "B-MISC", "I-MISC"]
    assert tagging.iob1_to_iob2(iob1) == iob2


def test_read_conll_real_counts_and_iob2(shared_data):
    counts = {"train": (14041, 203621), "valid": (3250, 51362), "test": (3453, 46435)}
    for split, (n_sentences, n_tokens) in counts.items():
        sentences = tagging.read_conll(shared_data / "conll2003" / f"{split}.txt", scheme="IOB1")
        assert len(sentences) == n_sentences
        assert sum(len(s.tokens) for s in sentences) == n_tokens
        for s in sentences:  # IOB2: an I-X always follows B-X or I-X
            previous = ["O", *s.tags[:-1]]
            assert all(
                not t.startswith("I-") or p[2:] == t[2:]
                for p, t in zip(previous, s.tags, strict=True)
            )
    first = tagging.read_conll(shared_data / "conll2003" / "train.txt", scheme="IOB1")[0]
    assert first.tokens[:3] == ("EU", "rejects", "German")
    assert first.tags[:3] == ("B-ORG", "O", "B-MISC") and first.source.endswith("train.txt:3")
    for split, n in {"train": 3394, "dev": 1009, "test": 1287}.items():  # tab-separated, IOB2
        assert len(tagging.read_conll(shared_data / "wnut17" / f"{split}.txt")) == n


def test_tagging_labels_first_piece_and_reports_cut_words(tiny_tokenizer):
    sentence = tagging.TaggedSentence(
        ("The", "cats", "hugely", "sat"), ("O", "B-PER", "I-PER", "O"), "x:1"
    )
    label_map = {"B-PER": 0, "I-PER": 1, "O": 2}
    full = tagging.featurize_tagging([sentence], tiny_tokenizer, max_len=10, label_map=label_map)
    # the | cat ##s | hu ##ge ##ly | sat
    np.testing.assert_array_equal(
        full.arrays["input_ids"][0], [CLS, THE, CAT, S, HU, GE, LY, SAT, SEP, PAD]
    )
    np.testing.assert_array_equal(
        full.arrays["labels"][0], [-100, 2, 0, -100, 1, -100, -100, 2, -100, -100]
    )
    np.testing.assert_array_equal(full.meta["word_index"][0], [-1, 0, 1, -1, 2, -1, -1, 3, -1, -1])
    assert full.stats["words_cut"] == 0

    # max_len 5 leaves 3 pieces: "the cat ##s"; "hugely" (I-PER) and "sat" (O) are cut.
    cut = tagging.featurize_tagging([sentence], tiny_tokenizer, max_len=5, label_map=label_map)
    np.testing.assert_array_equal(cut.arrays["input_ids"][0], [CLS, THE, CAT, S, SEP])
    assert cut.stats == dict(
        num_sentences=1, num_truncated=1, words_cut=2, tagged_words_cut=1, words_without_pieces=0
    )
    # Predicting the gold ids back gives the gold tags, with "O" for the two cut words.
    names = list(label_map)
    tags, missing = tagging.predictions_to_tags(cut.arrays["labels"].clip(0), cut, names)
    assert (tags, missing) == ([["O", "B-PER", "O", "O"]], 2)
    tags, missing = tagging.predictions_to_tags(full.arrays["labels"].clip(0), full, names)
    assert (tags, missing) == ([list(sentence.tags)], 0)


def test_tagging_real_conll_round_trips_gold_tags(shared_data, uncased):
    sentences = tagging.read_conll(shared_data / "conll2003" / "valid.txt", scheme="IOB1")[:300]
    label_map = common.build_label_map(sentences)
    features = tagging.featurize_tagging(sentences, uncased, max_len=128, label_map=label_map)
    tags, missing = tagging.predictions_to_tags(
        features.arrays["labels"].clip(0), features, list(label_map)
    )
    assert missing == 0 and features.stats["num_truncated"] == 0
    assert tags == [list(s.tags) for s in sentences]
    labelled = (features.arrays["labels"] >= 0).sum()
    assert labelled == sum(len(s.tokens) for s in sentences)


# ----------------------------------------------------------------------------- SQuAD


def test_squad_split_by_article_is_disjoint_and_deterministic(shared_data):
    path = str(shared_data / "squad-v1.1" / "dev-v1.1.json")
    everything, train, eval_ = _squad(path), _squad(path, "train"), _squad(path, "eval")
    assert len(everything) == 10570 and len(train) + len(eval_) == 10570
    train_titles, eval_titles = {e.title for e in train}, {e.title for e in eval_}
    assert not train_titles & eval_titles
    assert len(eval_titles) == round(0.2 * 48) and len(train_titles) == 48 - 10
    assert [e.id for e in qa.read_squad(path, split="eval")] == [e.id for e in eval_]
    assert {e.title for e in _squad(path, "eval", seed=1)} != eval_titles
    assert sum(len(e.answers) for e in everything) == 34726
    first = everything[0]
    assert first.context[first.answers[0].start :].startswith(first.answers[0].text)


def test_qa_windows_recover_every_answer_that_fits(shared_data, uncased):
    examples = _squad(str(shared_data / "squad-v1.1" / "dev-v1.1.json"), "eval")[:200]
    # Short windows so that most contexts split into several overlapping ones.
    max_len = 96
    features = qa.featurize_qa(examples, uncased, max_len=max_len, doc_stride=32, is_training=True)
    arrays, meta = features.arrays, features.meta
    assert features.stats["num_features"] > 2 * len(examples)
    assert set(meta["example_index"].tolist()) == set(range(len(examples)))
    found = set()
    for row in range(len(features)):
        start, end = arrays["start_positions"][row], arrays["end_positions"][row]
        ids = arrays["input_ids"][row]
        assert ids[0] == 101 and (ids == 102).sum() == 2
        if start == 0:
            continue
        example = examples[meta["example_index"][row]]
        answer = example.answers[0]
        span = example.context[meta["offsets"][row, start, 0] : meta["offsets"][row, end, 1]]
        # The pieces cover the answer and nothing beyond the words it touches.
        assert answer.text in span and len(span.split()) == len(answer.text.split())
        found.add(example.id)
    for example in examples:  # windows overlap by room - stride, so any shorter answer fits
        if example.id not in found:
            question = uncased.encode(example.question, add_special_tokens=False).ids
            answer = uncased.encode(example.answers[0].text, add_special_tokens=False).ids
            assert len(answer) > max_len - len(question) - 3 - 32
    assert len(found) >= 0.98 * len(examples)
    context_rows = meta["offsets"][:, :, 0] >= 0
    assert np.all(arrays["token_type_ids"][context_rows] == 1)


def test_postprocess_returns_gold_text_from_one_hot_logits(shared_data, uncased):
    examples = _squad(str(shared_data / "squad-v1.1" / "dev-v1.1.json"), "eval")[200:400]
    features = qa.featurize_qa(examples, uncased, max_len=128, doc_stride=48)
    starts, ends = features.arrays["start_positions"], features.arrays["end_positions"]
    n, length = features.arrays["input_ids"].shape
    start_logits = np.zeros((n, length), np.float32)
    end_logits = np.zeros((n, length), np.float32)
    start_logits[np.arange(n), starts] = 10.0
    end_logits[np.arange(n), ends] = 10.0
    predictions = qa.postprocess_qa(examples, features, start_logits, end_logits)
    assert set(predictions) == {e.id for e in examples}
    # Questions whose first answer lies in some window and spans at most 30 pieces.
    inside = (starts > 0) & (ends - starts < 30)
    answerable = [examples[i] for i in sorted(set(features.meta["example_index"][inside]))]
    assert len(answerable) >= 0.98 * len(examples)
    exact = [predictions[e.id] == e.answers[0].text for e in answerable]
    # An answer ending inside a word ("Japan" of "Japanese") comes back as the whole word;
    # every other one comes back exactly.
    assert sum(exact) >= 0.98 * len(answerable)
    assert all(e.answers[0].text in predictions[e.id] for e in answerable)


def test_postprocess_respects_length_limit_and_context_only(tiny_tokenizer):
    example = qa.QAExample("q1", "t", "cat", "the cat sat on the mat", (qa.Answer("mat", 19),))
    features = qa.featurize_qa([example], tiny_tokenizer, max_len=16)
    # [CLS] cat [SEP] the cat sat on the mat [SEP]: context pieces are positions 3..8
    np.testing.assert_array_equal(features.meta["offsets"][0, 3:9, 0], [0, 4, 8, 12, 15, 19])
    assert (features.arrays["start_positions"][0], features.arrays["end_positions"][0]) == (8, 8)
    start, end = np.zeros((1, 16)), np.zeros((1, 16))
    start[0, 1], end[0, 1] = 100.0, 100.0  # the question piece is never an answer
    start[0, 4], end[0, 7] = 5.0, 5.0  # "cat sat on the", 4 pieces
    end[0, 5] = 4.0  # "cat sat"
    assert qa.postprocess_qa([example], features, start, end) == {"q1": "cat sat on the"}
    limited = qa.postprocess_qa([example], features, start, end, max_answer_length=3)
    assert limited == {"q1": "cat sat"}


def test_training_skips_mismatched_answers_with_a_warning(tiny_tokenizer, caplog):
    good = qa.QAExample("a", "t", "cat", "the cat sat", (qa.Answer("sat", 8),))
    bad = qa.QAExample("b", "t", "cat", "the cat sat", (qa.Answer("mat", 8),))
    with caplog.at_level(logging.WARNING, logger="bertjax.tasks.qa"):
        features = qa.featurize_qa([good, bad], tiny_tokenizer, max_len=16, is_training=True)
    assert features.stats["answers_mismatched"] == 1
    assert features.meta["example_index"].tolist() == [0]
    assert "skipped 1 of 2 training examples" in caplog.text
    kept = qa.featurize_qa([good, bad], tiny_tokenizer, max_len=16)
    assert kept.meta["example_index"].tolist() == [0, 1]
    assert kept.arrays["start_positions"].tolist() == [5, 0]


def test_windows_cover_the_context_with_stride():
    assert qa._windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert qa._windows(3, 4, 3) == [(0, 3)]
    assert qa._windows(0, 4, 3) == [(0, 0)]
