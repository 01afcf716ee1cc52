"""Korean readers and metrics: KLUE NER/NLI/STS, KorNLI/KorSTS, KorQuAD 1.0, table corpora."""

import collections
import json
import pathlib

import numpy as np
import pytest

from bertjax.data.tokenizer import load_tokenizer
from bertjax.tasks import korean
from bertjax.tasks.classification import read_text_classification
from bertjax.tasks.common import build_label_map
from bertjax.tasks.qa import Answer, QAExample
from bertjax.tasks.tagging import featurize_tagging, predictions_to_tags
from tests.conftest import REPO

# Two sentences in the KLUE-NER layout: file comments (one holding a tab), headers with markup,
# one "CHAR\tTAG" line per character (spaces too), blank lines between.
NER_SAMPLE = (
    "## 토큰, 레이블 구분자 : \\t\n"
    "## 컬럼명 : CHAR\tNE_TAG\n"
    "## s1\t<경찰:OG>은 <16명:QT>을\n"
    "경\tB-OG\n찰\tI-OG\n은\tO\n \tO\n1\tB-QT\n6\tI-QT\n명\tI-QT\n을\tO\n"
    "\n"
    "## s2\t<서울 시:LC> \n"
    "서\tB-LC\n울\tI-LC\n \tI-LC\n시\tI-LC\n \tO\n"
)


@pytest.fixture
def ner_file(tmp_path):
    path = tmp_path / "ner.tsv"
    path.write_text(NER_SAMPLE, encoding="utf-8")
    return path


def test_klue_ner_char_units(ner_file):
    first, second = korean.read_klue_ner(ner_file)
    assert first.guid == "s1" and first.source == f"{ner_file}:3"
    assert first.text == "경찰은 16명을"
    assert first.tokens == ("경", "찰", "은", "1", "6", "명", "을")
    assert first.tags == ("B-OG", "I-OG", "O", "B-QT", "I-QT", "I-QT", "O")
    assert first.offsets[3] == (4, 5)
    assert first.gold_char_tags() == list(first.tags)
    assert korean.to_char_tags(first, first.tags) == list(first.tags)
    # The header's trailing space is part of the text; spaces get no token.
    assert second.text == "서울 시 " and second.tokens == ("서", "울", "시")
    assert second.gold_char_tags() == ["B-LC", "I-LC", "I-LC"]


def test_klue_ner_word_units_lose_particles(ner_file):
    first, _ = korean.read_klue_ner(ner_file, unit="word")
    assert first.tokens == ("경찰은", "16명을") and first.tags == ("B-OG", "B-QT")
    # Mapped back, the particles 은/을 join the entities: neither entity is exact any more.
    back = korean.to_char_tags(first, first.tags)
    assert back == ["B-OG", "I-OG", "I-OG", "B-QT", "I-QT", "I-QT", "I-QT"]
    scores = korean.klue_ner_metrics([first.gold_char_tags()], [back])
    assert scores["entity_micro_f1"] == 0.0


@pytest.mark.parametrize(
    "bad_line, message",
    [("경\tB-OG\tX", "ner.tsv:4"), ("경찰\tB-OG", "ner.tsv:4"), ("경\tB_OG", "ner.tsv:4")],
)
def test_klue_ner_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "ner.tsv"
    path.write_text(NER_SAMPLE.replace("경\tB-OG", bad_line, 1), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        korean.read_klue_ner(path)


def test_klue_ner_header_mismatch_and_unknown_unit(tmp_path, ner_file):
    path = tmp_path / "ner.tsv"
    path.write_text(NER_SAMPLE.replace("<16명:QT>을", "<17명:QT>을"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"ner.tsv:3: the header text does not match"):
        korean.read_klue_ner(path)
    with pytest.raises(ValueError, match="unit must be one of"):
        korean.read_klue_ner(ner_file, unit="morpheme")


def test_klue_ner_real_dev_file(shared_data):
    path = shared_data / "klue" / "klue-ner-v1.1" / "klue-ner-v1.1_dev.tsv"
    sentences = korean.read_klue_ner(path)
    assert len(sentences) == 5000  # SOURCE.md
    assert sentences[0].guid == "klue-ner-v1_dev_00000-wikitree"
    assert sentences[0].tokens[:3] == ("경", "찰", "은")
    assert {t for s in sentences for t in s.tags} == set(korean.KLUE_NER_LABELS)
    assert max(len(s.tokens) for s in sentences) == 121  # fits max_len=128 at a piece a char
    gold = [s.gold_char_tags() for s in sentences]
    entities = collections.Counter(e[0] for g in gold for e in korean.strict_entities(g))
    assert entities == {"PS": 4418, "QT": 3150, "DT": 2312, "OG": 2182, "LC": 1648, "TI": 545}
    # The gold word tags of whitespace words, spread back over characters, are far off.
    words = korean.read_klue_ner(path, unit="word")
    back = [korean.to_char_tags(s, s.tags) for s in words]
    scores = korean.klue_ner_metrics(gold, back)
    assert 0.35 < scores["entity_micro_f1"] < 0.42
    train = korean.read_klue_ner(path, split="train", seed=1)
    held = korean.read_klue_ner(path, split="eval", seed=1)
    assert (len(train), len(held)) == (4000, 1000)
    assert not {s.guid for s in train} & {s.guid for s in held}


def test_klue_ner_through_featurize_tagging(tmp_path, ner_file):
    sentences = korean.read_klue_ner(ner_file)
    chars = sorted({c for s in sentences for c in s.tokens})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *chars]) + "\n")
    tokenizer = load_tokenizer(vocab, lowercase=False, strip_accents=False)  # keep Hangul NFC
    label_map = build_label_map(sentences, korean.KLUE_NER_LABELS)
    features = featurize_tagging(sentences, tokenizer, max_len=16, label_map=label_map)
    assert features.stats["words_without_pieces"] == 0
    assert (features.arrays["input_ids"][:, 1:8] != 1).all()  # no [UNK]
    perfect = np.where(features.arrays["labels"] < 0, 0, features.arrays["labels"])
    tags, missing = predictions_to_tags(perfect, features, korean.KLUE_NER_LABELS)
    assert missing == 0
    predicted = [korean.to_char_tags(s, t) for s, t in zip(sentences, tags, strict=True)]
    gold = [s.gold_char_tags() for s in sentences]
    assert korean.klue_ner_metrics(gold, predicted) == {
        "entity_macro_f1": 1.0,
        "entity_micro_f1": 1.0,
        "char_macro_f1": 1.0,
    }


# ----------------------------------------------------------------------------- KLUE-NER metrics


def test_strict_entities_drop_stray_inside_tags():
    tags = ["B-PS", "I-PS", "I-LC", "O", "I-OG", "B-DT", "B-DT", "I-DT"]
    assert korean.strict_entities(tags) == [("PS", 0, 1), ("DT", 5, 5), ("DT", 6, 7)]


def test_klue_ner_metrics_hand_computed():
    gold = [["B-PS", "I-PS", "O", "B-LC", "O"], ["B-PS", "O", "O"]]
    pred = [["B-PS", "I-PS", "O", "B-OG", "O"], ["B-PS", "I-PS", "O"]]
    scores = korean.klue_ner_metrics(gold, pred, labels=("B-PS", "I-PS", "B-LC", "B-OG", "O"))
    # Entities: gold PS(0,0-1), LC(0,3), PS(1,0); predicted PS(0,0-1), OG(0,3), PS(1,0-1).
    # PS: 1 correct of 2 gold, 2 predicted -> F1 = 2*1/(2+2) = 0.5; LC: 0/(1+0) = 0;
    # OG: 0/(0+1) = 0. Macro over {LC, OG, PS} = 0.5/3; micro = 2*1/(3+3) = 1/3.
    assert scores["entity_macro_f1"] == pytest.approx(0.5 / 3)
    assert scores["entity_micro_f1"] == pytest.approx(1 / 3)
    # Characters (8): B-PS 2 tp -> 1; I-PS gold 1, pred 2, tp 1 -> 2/3; B-LC gold 1 pred 0 -> 0;
    # B-OG gold 0 pred 1 -> 0; O gold 4, pred 3, tp 3 -> 6/7. Mean of the five labels.
    assert scores["char_macro_f1"] == pytest.approx((1 + 2 / 3 + 0 + 0 + 6 / 7) / 5)


def test_klue_char_macro_f1_counts_absent_labels_as_one():
    # Only O and B-PS occur; the 11 other KLUE labels are absent on both sides and score 1.
    scores = korean.klue_ner_metrics([["O", "B-PS"]], [["O", "O"]])
    # O: gold 1, pred 2, tp 1 -> 2/3; B-PS: gold 1, pred 0 -> 0.
    assert scores["char_macro_f1"] == pytest.approx((11 + 2 / 3) / 13)
    assert scores["entity_macro_f1"] == 0.0


def test_klue_ner_metrics_length_mismatch():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        korean.klue_ner_metrics([["O", "O"]], [["O"]])


# ----------------------------------------------------------------------------- KLUE-NLI / STS


def _write_json(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def test_klue_nli_sts_hand_made(tmp_path):
    nli = [
        {"guid": f"n{i}", "premise": f"전제 {i}", "hypothesis": "가설", "gold_label": label}
        for i, label in enumerate(["entailment", "neutral", "contradiction", "neutral"])
    ]
    examples = korean.read_klue_nli(_write_json(tmp_path / "nli.json", nli))
    assert [e.label for e in examples] == ["entailment", "neutral", "contradiction", "neutral"]
    assert examples[1].text_a == "전제 1" and examples[1].source.endswith("nli.json:n1")
    sts = [{"guid": "s0", "sentence1": "a", "sentence2": "b", "labels": {"real-label": 3.25}}]
    (example,) = korean.read_klue_sts(_write_json(tmp_path / "sts.json", sts))
    assert (example.text_a, example.text_b, float(example.label)) == ("a", "b", 3.25)
    del nli[2]["gold_label"]
    with pytest.raises(ValueError, match=r"nli.json: example 2 lacks \['gold_label'\]"):
        korean.read_klue_nli(_write_json(tmp_path / "nli.json", nli))


def test_eval_guids_reproducible_and_disjoint():
    guids = [f"g{i}" for i in range(50)]
    held = korean.eval_guids(guids, 0.2, seed=3)
    assert len(held) == 10 and held == korean.eval_guids(list(reversed(guids)), 0.2, seed=3)
    assert held != korean.eval_guids(guids, 0.2, seed=4)
    assert len(korean.eval_guids(guids[:2], 0.9)) == 1  # at most n - 1
    with pytest.raises(ValueError, match="not unique"):
        korean.eval_guids(["a", "a", "b"])


def test_klue_nli_sts_real_dev_files(shared_data):
    nli_path = shared_data / "klue" / "klue-nli-v1.1" / "klue-nli-v1.1_dev.json"
    nli = korean.read_klue_nli(nli_path)
    assert len(nli) == 3000
    assert collections.Counter(e.label for e in nli) == dict.fromkeys(korean.KLUE_NLI_LABELS, 1000)
    train = korean.read_klue_nli(nli_path, split="train", seed=0)
    held = korean.read_klue_nli(nli_path, split="eval", seed=0)
    assert (len(train), len(held)) == (2400, 600)
    assert not {e.source for e in train} & {e.source for e in held}
    sts = korean.read_klue_sts(shared_data / "klue" / "klue-sts-v1.1" / "klue-sts-v1.1_dev.json")
    scores = [float(e.label) for e in sts]
    assert len(sts) == 519 and min(scores) == 0.0 and max(scores) == 5.0
    assert scores[0] == pytest.approx(4.857142857142857)  # real-label, not the rounded 4.9


# ----------------------------------------------------------------------------- KorNLI / KorSTS


def test_kornlu_files_read_by_the_generic_tsv_reader(shared_data):
    """No Korean reader needed: counts match SOURCE.md and quotes stay literal (QUOTE_NONE)."""
    root = shared_data / "kornlu"
    pair = {"text_a": "sentence1", "text_b": "sentence2"}
    nli = {
        name: read_text_classification(
            root / "KorNLI" / f"xnli.{name}.ko.tsv", **pair, label="gold_label"
        )
        for name in ("dev", "test")
    }
    assert {k: len(v) for k, v in nli.items()} == {"dev": 2490, "test": 5010}
    assert set(collections.Counter(e.label for e in nli["dev"]).values()) == {830}
    assert nli["dev"][0].text_a == '그리고 그가 말했다, "엄마, 저 왔어요."'
    sts = {
        name: read_text_classification(root / "KorSTS" / f"sts-{name}.tsv", **pair, label="score")
        for name in ("train", "dev", "test")
    }
    assert {k: len(v) for k, v in sts.items()} == {"train": 5749, "dev": 1500, "test": 1379}
    scores = [float(e.label) for v in sts.values() for e in v]
    assert min(scores) == 0.0 and max(scores) == 5.0


# ----------------------------------------------------------------------------- KorQuAD 1.0


def test_korquad_normalize():
    assert korean.korquad_normalize("《서울》(Seoul)의  ‘수도’!") == "서울 seoul 의 수도"
    assert korean.korquad_normalize("the 1st") == "the 1st"  # no article removal, unlike SQuAD


def test_korquad_answer_f1_hand_computed():
    # "세종 대왕" -> chars 세,종,대,왕 (4); "세종대왕께서" -> 세,종,대,왕,께,서 (6); common 4.
    # precision 4/4 = 1, recall 4/6 = 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8.
    assert korean.korquad_answer_f1("세종 대왕", "세종대왕께서") == pytest.approx(0.8)
    assert korean.korquad_answer_f1("1443년", "1443") == pytest.approx(
        2 * 4 / 4 * 4 / 5 / (1 + 4 / 5)
    )
    assert korean.korquad_answer_f1("!!", "세종") == 0.0


def test_korquad_em_f1_hand_computed():
    examples = [
        QAExample("q1", "t", "?", "c", (Answer("세종대왕", 0), Answer("세종", 0))),
        QAExample("q2", "t", "?", "c", (Answer("1443년", 0),)),
        QAExample("q3", "t", "?", "c", (Answer("한글", 0),)),
    ]
    predictions = {"q1": "《세종》", "q2": "1443"}
    # q1: "《세종》" normalizes to "세종" = the second answer: EM 1, F1 1.
    # q2: EM 0; chars 1,4,4,3 vs 1,4,4,3,년: P = 1, R = 4/5, F1 = 8/9. q3: missing, 0.
    scores = korean.korquad_em_f1(predictions, examples)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 8 / 9) / 3)
    # Exact match keeps spaces: "세종 대왕" is not "세종대왕", though its F1 is 1.
    spaced = korean.korquad_em_f1({"q1": "세종 대왕"}, examples[:1])
    assert spaced == {"exact_match": 0.0, "f1": 100.0}


# ----------------------------------------------------------------------------- table corpora


def test_table_documents_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "news.csv"
    csv_path.write_text(
        '제목,내용\n가,"첫 문장이다. 둘째 문장이다.\n\n새 문단이다."\n나," "\n다,셋째\n',
        encoding="utf-8",
    )
    docs = list(korean.iter_table_documents(csv_path, "내용"))
    assert docs == [
        ["첫 문장이다.", "둘째 문장이다.", "새 문단이다."],
        ["셋째"],
    ]  # blank row skipped
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "하나. 둘."}\n\n{"text": "셋"}\n', encoding="utf-8")
    assert list(korean.iter_table_documents(jsonl, "text")) == [["하나.", "둘."], ["셋"]]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", "x,y\n1,2\n", r"a.csv: no column '내용'; the header has \['x', 'y'\]"),
        ("a.csv", '내용,y\n"a\nb",2\n3\n', r"a.csv: row 2 \(ending on line 4\) has 1 fields"),
        ("a.jsonl", '{"내용": "a"}\n{"x": 1}\n', r"a.jsonl: row 2 \(line 2\): no key '내용'"),
        ("a.jsonl", '{"내용": 3}\n', r"a.jsonl: row 1 \(line 1\): '내용' is int, not text"),
        ("a.txt", "", "format must be one of"),
    ],
)
def test_table_documents_errors_name_file_row_column(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        list(korean.iter_table_documents(path, "내용"))


def test_table_documents_real_wikinews(shared_data):
    path = shared_data / "ko-wikinews" / "wikinews.csv"
    docs = list(korean.iter_table_documents(path, "내용"))
    assert len(docs) == 644  # SOURCE.md: 644 articles, none blank
    assert docs[0][0] == "버락 오바마 미국 제44대 대통령이 공식 취임하였다."
    # The first article's content spans two lines; both paragraphs survive.
    assert docs[0][-1].startswith("2008년 8월 27일에 열린 민주당 전당대회에서")
    assert sum(len(d) for d in docs) == 6733


# ----------------------------------------------------------------------------- configs/ko


@pytest.mark.parametrize("name", ["kornli", "korsts", "klue_ner", "klue_nli", "klue_sts"])
def test_ko_configs_point_at_real_files(shared_data, monkeypatch, name):
    from bertjax.config import load_config_file, resolve_path
    from bertjax.tasks.assembly import read_split

    monkeypatch.setenv("BERTJAX_DATA", str(shared_data))
    config = load_config_file(REPO / "configs" / "ko" / f"{name}.py")
    for split in ("train", "eval"):
        assert resolve_path(config.task[f"{split}_file"]).is_file()
    train, held = (read_split(config.task, split) for split in ("train", "eval"))
    expected = {"kornli": 5010, "korsts": 1500, "klue_ner": 1000, "klue_nli": 600}
    if name in expected:
        assert len(held) == expected[name]
    if name.startswith("klue"):  # one dev file, split by guid: no example on both sides
        assert not {e.source.rsplit(":", 1)[-1] for e in train} & {
            e.source.rsplit(":", 1)[-1] for e in held
        }
        assert len(train) + len(held) == {"klue_ner": 5000, "klue_nli": 3000, "klue_sts": 519}[name]


@pytest.mark.slow
def test_klue_ner_and_klue_sts_fine_tune_with_klue_scoring(shared_data, monkeypatch, tmp_path):
    """A tiny BERT with a vocabulary trained on ko-wikipedia, fine-tuned on KLUE-NER and
    KLUE-STS slices through the shared configs: the readers, the split and KLUE's metrics."""
    from bertjax.config import load_config
    from bertjax.data.tokenizer import train_wordpiece
    from bertjax.interop import model_dir
    from bertjax.models.bert import BertConfig
    from bertjax.training.finetune import finetune

    monkeypatch.setenv("BERTJAX_DATA", str(shared_data))
    corpus = [str(shared_data / "ko-wikipedia" / "AA" / "wiki_00")]
    vocab = train_wordpiece(corpus, tmp_path / "tok", vocab_size=4000)
    cfg = BertConfig(
        vocab_size=len(vocab.read_text(encoding="utf-8").splitlines()),
        hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
        max_position_embeddings=128,
    )  # fmt: skip
    options = json.loads((vocab.parent / "bertjax_tokenizer.json").read_text())
    model_dir.save_model(tmp_path / "ko", model_dir.init_params(cfg, heads=()), cfg, vocab, options)
    common = [
        f"--config.init_from={tmp_path / 'ko'}",
        "--config.train.global_batch_size=16",
        "--config.train.num_steps=6",
        "--config.task.max_train_examples=64",
        "--config.task.max_eval_examples=32",
        "--config.optim.learning_rate=1e-3",
        "--config.checkpoint.async_save=False",
    ]
    ner_config = load_config(REPO / "configs" / "ko" / "klue_ner.py", common)
    ner = finetune(ner_config, tmp_path / "n")
    assert {"f1", "entity_macro_f1", "entity_micro_f1", "char_macro_f1"} <= set(ner)
    # KLUE's character scoring of the written predictions (one tag per non-space character) is
    # the reported score, and six steps do no worse than tagging every character O.
    rows = [r.split("\t") for r in (tmp_path / "n" / "predictions.tsv").read_text().splitlines()]
    tokens, guess, gold = ([r[i].split() for r in rows[1:]] for i in (1, 2, 3))
    assert len(gold) == 32 and [len(g) for g in gold] == [len(t) for t in tokens]
    scored = korean.klue_ner_metrics(gold, guess)["char_macro_f1"]
    all_o = korean.klue_ner_metrics(gold, [["O"] * len(g) for g in gold])["char_macro_f1"]
    assert ner["char_macro_f1"] == pytest.approx(scored, abs=1e-12)
    assert ner["char_macro_f1"] >= all_o  # 0.0693 against 0.0676 when written
    sts = finetune(load_config(REPO / "configs" / "ko" / "klue_sts.py", common), tmp_path / "s")
    assert set(sts) == {"pearson", "spearman"}


@pytest.mark.slow
def test_korean_quickstart_trains_on_ko_wikipedia(shared_data, monkeypatch, tmp_path):
    """configs/ko/quickstart.py finds its four ko-wikipedia files through $BERTJAX_DATA, trains a
    vocabulary that keeps Hangul syllables whole, and runs (two steps here)."""
    from bertjax.config import load_config
    from bertjax.training.pretrain import pretrain

    monkeypatch.setenv("BERTJAX_DATA", str(shared_data))
    overrides = [
        "--config.train.num_steps=2",
        "--config.optim.warmup_steps=1",
        "--config.train.global_batch_size=8",
        "--config.train.eval_batches=1",
        "--config.data.max_seq_len=32",
        "--config.data.max_predictions=5",
        "--config.checkpoint.async_save=False",
    ]
    config = load_config(REPO / "configs" / "ko" / "quickstart.py", overrides)
    final = pretrain(config, tmp_path)
    assert np.isfinite(final["eval_mlm_loss"])
    vocab = (tmp_path / "model" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert {"대통령", "미국", "한국", "##다"} <= set(vocab)  # whole syllables (NFC), as written
    assert not any("\u1100" <= ch <= "\u11ff" for token in vocab for ch in token)  # no jamo
    metadata = json.loads((tmp_path / "data" / "metadata.json").read_text())
    assert [pathlib.Path(f).name for f in metadata["source_files"]] == [
        f"wiki_0{i}" for i in range(4)
    ]
