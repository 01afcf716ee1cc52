"""Entity-aware BERT: span sources, markers, entity_ids, entity masking, the entity embedding,
a classification step with entity_ids and the refused Hugging Face export."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax.data import entities
from bertjax.data.tokenizer import load_tokenizer
from bertjax.interop import hf_bert
from bertjax.interop.model_dir import PRETRAINING_HEADS, init_params
from bertjax.models import Model
from bertjax.models.bert import BERT, BertConfig, Embeddings
from bertjax.objectives.masking import mask_batch
from bertjax.tasks import classification

TINY = dict(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
    hidden_dropout=0.0,
    attention_dropout=0.0,
)
TEXT = "이순신은 조선의 장군이다"


def test_markup_spans_have_offsets_into_the_plain_text():
    plain, spans = entities.parse_markup("<이순신:PS>은 <조선:LC>의 장군이다")
    assert plain == TEXT
    assert spans == [(0, 3), (5, 7)]
    assert [plain[s:e] for s, e in spans] == ["이순신", "조선"]


def test_jsonl_spans_are_checked_and_read_by_the_reader(tmp_path):
    assert entities.spans_from_field([[5, 7], [0, 3]], TEXT, "f:1") == [(0, 3), (5, 7)]
    with pytest.raises(ValueError, match="f:1: entity span"):
        entities.spans_from_field([[10, 99]], TEXT, "f:1")
    with pytest.raises(ValueError, match="overlap"):
        entities.spans_from_field([[0, 3], [2, 4]], TEXT, "f:1")
    path = tmp_path / "train.jsonl"
    row = {"sentence": TEXT, "label": "a", "entities": [[0, 3]]}
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    (example,) = classification.read_text_classification(path, text_a="sentence", label="label")
    assert example.entities == ((0, 3),)


def test_gazetteer_matches_longest_first_and_reads_wikiextractor_titles(tmp_path):
    wiki = tmp_path / "wiki.txt"
    wiki.write_text(
        '<doc id="1" url="u" title="조선">\n조선은...\n</doc>\n'
        '<doc id="2" url="u" title="조선왕조">\n...\n</doc>\n'
        '<doc id="3" url="u" title="이순신">\n...\n</doc>\n',
        encoding="utf-8",
    )
    names = entities.read_gazetteer(wiki)
    assert names == ["이순신", "조선", "조선왕조"]
    text = "조선왕조의 이순신과 조선"
    spans = entities.Gazetteer(names).spans(text)
    assert [text[s:e] for s, e in spans] == ["조선왕조", "이순신", "조선"]
    assert spans == [(0, 4), (6, 9), (11, 13)]


def test_insert_markers_moves_offsets():
    marked, offsets = entities.insert_markers(TEXT, [(0, 3), (5, 7)])
    assert marked == "[ENT] 이순신 [/ENT]은 [ENT] 조선 [/ENT]의 장군이다"
    for start, end in [(0, 3), (5, 7), (9, 11)]:
        assert marked[offsets[start] : offsets[start] + end - start] == TEXT[start:end]


def _vocab(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[ENT]", "[/ENT]"]
    tokens += ["이순신", "은", "조선", "의", "장군", "##이다", "장", "##군", "a", "b"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def test_markers_are_single_tokens_and_entity_ids_align(tmp_path):
    tok = load_tokenizer(_vocab(tmp_path), lowercase=False)
    ent, end = entities.SpanSource.marker_ids(tok, "config.task.entities")
    marked = entities.SpanSource("markup", "f").mark("<이순신:PS>은 <조선:LC>의 장군이다")
    tokens = tok.encode(marked, add_special_tokens=False).tokens
    # a marker ends the word: the particle after an entity is a word of its own
    assert tokens == ["[ENT]", "이순신", "[/ENT]", "은", "[ENT]", "조선", "[/ENT]", "의"] + [
        "장군",
        "##이다",
    ]
    ids = np.array([tok.encode(marked, add_special_tokens=False).ids])
    np.testing.assert_array_equal(
        entities.entity_ids(ids, ent, end), [[1, 1, 1, 0, 1, 1, 1, 0, 0, 0]]
    )
    # a span cut by truncation (no [/ENT]) counts to the end of the row
    np.testing.assert_array_equal(
        entities.entity_ids(np.array([[2, ent, 7, 9]]), ent, end), [[0, 1, 1, 1]]
    )


def test_entity_masking_masks_whole_entities():
    ent, end, cls, sep, pad, mask = 5, 6, 2, 3, 0, 4
    #            CLS ENT  a  ##b ##c /ENT  d   e  ##f  SEP
    ids = np.array([[cls, ent, 10, 11, 12, end, 13, 14, 15, sep] + [pad] * 6])
    word_starts = np.array([[0, 1, 1, 0, 0, 1, 1, 1, 0, 0] + [0] * 6], bool)
    starts = entities.entity_word_starts(word_starts, ids, ent, end)
    np.testing.assert_array_equal(starts[0, :10], [0, 1, 1, 0, 0, 1, 1, 1, 0, 0])
    ids2 = np.array([[cls, ent, 10, 16, 12, end, 13, 14, 15, sep] + [pad] * 6])
    ws2 = np.array([[0, 1, 1, 1, 0, 1, 1, 1, 0, 0] + [0] * 6], bool)  # "a b ##c": two words
    starts2 = entities.entity_word_starts(ws2, ids2, ent, end)
    np.testing.assert_array_equal(starts2[0, :10], [0, 1, 1, 0, 0, 1, 1, 1, 0, 0])  # one entity
    batch = {
        "input_ids": jnp.asarray(np.repeat(ids2, 64, 0), jnp.int32),
        "token_type_ids": jnp.zeros((64, 16), jnp.int32),
        "attention_mask": jnp.asarray(np.repeat(ids2 != pad, 64, 0), jnp.int32),
        "word_starts": jnp.asarray(np.repeat(starts2, 64, 0)),
    }

    def chosen_positions(unmaskable_ids):
        out = mask_batch(
            jax.random.key(0),
            batch,
            candidate_ids=jnp.arange(10, 17),
            mask_id=mask,
            cls_id=cls,
            sep_id=sep,
            pad_id=pad,
            max_predictions=4,
            unmaskable_ids=unmaskable_ids,
            mask_rate=0.6,  # 4 of the 6 text pieces: room for the 3-piece entity
            whole_word_masking=True,
        )
        chosen = np.zeros((64, 16), bool)
        pos, w = np.asarray(out["masked_positions"]), np.asarray(out["masked_weights"]) > 0
        for r in range(64):
            chosen[r, pos[r][w[r]]] = True
        return chosen

    assert chosen_positions(())[:, [1, 5]].any()  # markers are tokens like any other...
    chosen = chosen_positions((ent, end))
    assert not chosen[:, [1, 5]].any()  # ...unless unmaskable, as the pretraining objective has
    entity = chosen[:, 2:5]
    assert np.all(entity.all(1) | ~entity.any(1))  # all three pieces or none
    assert entity.all(1).any()
    from bertjax.objectives.mlm_nsp import make_mask_fn

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[ENT]", "[/ENT]", "a", "##b"]
    data = {"max_predictions": 4, "mask_rate": 0.15, "whole_word_masking": True}
    special = {"mask": 4, "cls": 2, "sep": 3, "pad": 0}
    assert make_mask_fn(data, tokens, special).keywords["unmaskable_ids"] == (5, 6)


def _model(entity_vocab_size):
    cfg = BertConfig(**TINY, entity_vocab_size=entity_vocab_size)
    return cfg, Model(BERT, cfg, ())


def test_entity_embedding_changes_only_entity_tokens_and_is_off_at_zero():
    cfg, model = _model(2)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, 64, (2, 12)), jnp.int32)
    inputs = {"input_ids": ids, "attention_mask": jnp.ones_like(ids)}
    params = model.init(jax.random.key(0), inputs)["params"]
    assert params["backbone"]["embeddings"]["entity_embeddings"].value.shape == (2, 32)
    assert params["backbone"]["embeddings"]["entity_embeddings"].names == ("entity", "embed")
    layer = Embeddings(cfg)
    variables = {"params": params["backbone"]["embeddings"]}

    def embed(p, x):
        args = (x["input_ids"], jnp.zeros_like(ids), x["attention_mask"], x.get("entity_ids"))
        return layer.apply(variables, *args, deterministic=True)[0]

    zeros = embed(params, {**inputs, "entity_ids": jnp.zeros_like(ids)})
    absent = embed(params, inputs)
    np.testing.assert_array_equal(zeros, absent)  # all-zero entity_ids == no entity_ids
    entity_ids = jnp.zeros_like(ids).at[:, 3:6].set(1)
    some = embed(params, {**inputs, "entity_ids": entity_ids})
    changed = np.abs(np.asarray(some - zeros)).max(-1) > 1e-6
    np.testing.assert_array_equal(changed, np.asarray(entity_ids, bool))
    # with all-zero entity_ids, plain BERT with the same other weights gives the same output,
    # once row 0 of the entity table is folded into the position table
    plain_cfg, plain = _model(0)
    plain_params = jax.tree.map(lambda x: x, params)
    emb = dict(plain_params["backbone"]["embeddings"])
    table = emb.pop("entity_embeddings").value
    emb["position_embeddings"] = emb["position_embeddings"].replace_boxed(
        emb["position_embeddings"].value + table[0]
    )
    plain_params = {**plain_params, "backbone": {**plain_params["backbone"], "embeddings": emb}}
    ours = model.apply({"params": params}, {**inputs, "entity_ids": jnp.zeros_like(ids)})
    theirs = plain.apply({"params": plain_params}, inputs)
    np.testing.assert_allclose(ours["sequence_output"], theirs["sequence_output"], atol=1e-5)


def test_family_feeds_entity_ids_only_when_the_option_is_on():
    assert "entity_ids" not in BERT.fields_for(BertConfig(**TINY))
    assert "entity_ids" in BERT.fields_for(BertConfig(**TINY, entity_vocab_size=2))
    with pytest.raises(ValueError, match="config.model.entity_vocab_size"):
        BertConfig(**TINY, entity_vocab_size=-1)


def test_classification_step_runs_with_entity_ids(tmp_path):
    tok = load_tokenizer(_vocab(tmp_path), lowercase=False)
    gaz = tmp_path / "names.txt"
    gaz.write_text("이순신\n조선\n", encoding="utf-8")
    task_cfg = {"kind": "classification", "max_len": 16, "entities": f"gazetteer:{gaz}"}
    task_cfg = type("Cfg", (dict,), {"__getattr__": dict.__getitem__})(task_cfg)
    examples = [
        classification.TextExample(TEXT, None, "a", "x:1"),
        classification.TextExample("장군 조선", None, "b", "x:2"),
    ]
    task = classification.make_task(task_cfg, ["a", "b"])
    features = task.featurize(task_cfg, examples, tok, training=True)
    assert features.arrays["entity_ids"].tolist()[1][:6] == [0, 0, 1, 1, 1, 0]
    cfg = BertConfig(**TINY, entity_vocab_size=2)
    model = Model(BERT, cfg, tuple(task.heads))
    batch = {k: jnp.asarray(v) for k, v in features.arrays.items()}
    params = jax.tree.map(
        lambda x: getattr(x, "value", x),
        model.init(jax.random.key(0), batch)["params"],
        is_leaf=lambda x: hasattr(x, "value"),
    )
    tx = optax.adam(1e-2)

    def loss(p):
        sums = task.sums(model, p, batch, jax.random.key(1))
        return sums["task_loss"] / sums["task_count"]

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value, grads

    state = tx.init(params)
    params, state, first, grads = step(params, state)
    assert np.abs(grads["backbone"]["embeddings"]["entity_embeddings"]).sum() > 0
    for _ in range(5):
        params, state, last, _ = step(params, state)
    assert last < first


def test_hf_export_refuses_entity_models_and_is_unchanged_without():
    cfg = BertConfig(**TINY, entity_vocab_size=2)
    with pytest.raises(ValueError, match="config.model.entity_vocab_size=2"):
        hf_bert.config_to_hf(cfg)
    params = init_params(cfg, heads=PRETRAINING_HEADS)
    with pytest.raises(ValueError, match="config.model.entity_vocab_size=2"):
        hf_bert.params_to_hf(params, cfg)
    assert hf_bert.config_to_hf(BertConfig(**TINY))["model_type"] == "bert"


# ----------------------------------------------------------------------------- pretraining


def test_pretraining_data_carries_entity_spans_and_the_job_trains_on_them(tmp_path):
    """config.data.entities: gazetteer spans are marked before WordPiece, the source gives
    entity_ids over [ENT] ... [/ENT], entity masking makes each span one word, and the BERT job
    trains with the entity embedding; misconfigurations name the field before any data work."""
    from bertjax.config import load_config
    from bertjax.training.pretrain import pretrain
    from tests.conftest import REPO

    names = ["이순신", "세종대왕", "바다"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    lines = []
    for i in range(40):  # 40 documents of 4 sentences, 2 names in each
        lines += [f"이순신은 장군이다 {i}.", f"그는 바다를 지켰다 {i}.", f"세종대왕은 왕이다 {i}."]
        lines += [f"그는 글자를 만들었다 {i}.", ""]
    (tmp_path / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    overrides = [
        f"--config.data.corpus={tmp_path / 'corpus.txt'}",
        f"--config.data.entities=gazetteer:{tmp_path / 'names.txt'}",
        "--config.model.entity_vocab_size=2",
        "--config.model.vocab_size=200",
        "--config.data.max_seq_len=32",
        "--config.data.max_predictions=5",
        "--config.data.eval_fraction=0.25",
        "--config.data.whole_word_masking=True",
        "--config.data.entity_masking=True",
        "--config.train.num_steps=2",
        "--config.train.eval_batches=1",
        "--config.optim.warmup_steps=1",
        "--config.checkpoint.async_save=False",
    ]
    for bad, message in [
        ("--config.model.entity_vocab_size=0", r"config\.model\.entity_vocab_size=2"),
        ("--config.data.whole_word_masking=False", r"entity_masking=True.*whole_word_masking"),
    ]:
        config = load_config(REPO / "configs" / "test.py", [*overrides, bad])
        with pytest.raises(ValueError, match=message):
            pretrain(config, tmp_path / "bad")
        assert not (tmp_path / "bad" / "data").exists()  # nothing prepared
    final = pretrain(load_config(REPO / "configs" / "test.py", overrides), tmp_path / "run")
    assert np.isfinite(final["eval_mlm_loss"])

    from bertjax.data.shards import load_metadata
    from bertjax.data.source import PretrainingSource

    metadata = load_metadata(tmp_path / "run" / "data")
    kept = sum(split["num_documents"] for split in metadata["splits"].values())
    assert metadata["statistics"]["entity_spans"] == 3 * kept  # 3 names in every document
    tok = load_tokenizer(tmp_path / "run" / "model" / "vocab.txt")
    ent, end = (tok.token_to_id(t) for t in entities.ENTITY_MARKERS)
    source = PretrainingSource(tmp_path / "run" / "data", "train", entity_masking=True)
    item = source[0]
    ids, marked, starts = item["input_ids"], item["entity_ids"], item["word_starts"]
    assert (ids == ent).sum() >= 1 and (ids == ent).sum() == (ids == end).sum()
    for start, stop in zip(np.flatnonzero(ids == ent), np.flatnonzero(ids == end), strict=True):
        assert marked[start : stop + 1].all() and starts[start + 1]
        assert not starts[start + 2 : stop].any()  # one word from the first piece on
    outside = np.ones_like(marked, bool)
    for start, stop in zip(np.flatnonzero(ids == ent), np.flatnonzero(ids == end), strict=True):
        outside[start : stop + 1] = False
    assert not marked[outside].any()


def test_qa_features_mark_gazetteer_names_and_answers_map_to_the_original_context(tmp_path):
    """config.task.entities="gazetteer:..." for QA: markers around the names in question and
    context, entity_ids over them, context offsets into the original text (markers are not
    context), so training positions and predicted answers are the unmarked text."""
    from bertjax.tasks.qa import Answer, QAExample, featurize_qa, postprocess_qa

    (tmp_path / "names.txt").write_text("이순신\n조선\n", encoding="utf-8")
    tok = load_tokenizer(_vocab(tmp_path), lowercase=False)
    ent, end = entities.SpanSource.marker_ids(tok, "config.task.entities")
    context = "이순신은 조선의 장군이다"
    example = QAExample("q1", "t", "이순신은 누구인가", context, (Answer("조선의 장군", 5),))
    spans = entities.SpanSource(f"gazetteer:{tmp_path / 'names.txt'}", "config.task.entities")
    features = featurize_qa([example], tok, max_len=32, is_training=True, spans=spans)
    ids, offsets = features.arrays["input_ids"][0], features.meta["offsets"][0]
    tokens = [tok.id_to_token(int(i)) for i in ids[: int(features.arrays["attention_mask"].sum())]]
    assert tokens.count("[ENT]") == 3 and tokens.count("[/ENT]") == 3  # 1 in question, 2 context
    marked = features.arrays["entity_ids"][0]
    assert [t for t, m in zip(tokens, marked, strict=False) if m] == [
        *["[ENT]", "이순신", "[/ENT]"] * 2,
        *["[ENT]", "조선", "[/ENT]"],
    ]
    context_pieces = [(t, tuple(o)) for t, o in zip(tokens, offsets, strict=False) if o[0] >= 0]
    assert all(context[a:b] == t.removeprefix("##") for t, (a, b) in context_pieces)
    assert not any(t in entities.ENTITY_MARKERS for t, _ in context_pieces)
    start, stop = features.arrays["start_positions"][0], features.arrays["end_positions"][0]
    assert tokens[start] == "[ENT]" or tokens[start] == "조선"
    assert context[offsets[start][0] : offsets[stop][1]] == "조선의 장군"
    logits = np.full((1, 32), -10.0)
    start_logits, end_logits = logits.copy(), logits.copy()
    start_logits[0, start], end_logits[0, stop] = 10.0, 10.0
    assert postprocess_qa([example], features, start_logits, end_logits) == {"q1": "조선의 장군"}
    with pytest.raises(ValueError, match=r"config\.task\.entities='markup'.*gazetteer"):
        featurize_qa([example], tok, spans=entities.SpanSource("markup", "config.task.entities"))


def test_gazetteer_paths_may_start_with_the_data_folder(tmp_path, monkeypatch):
    (tmp_path / "names.txt").write_text("이순신\n", encoding="utf-8")
    monkeypatch.setenv("BERTJAX_DATA", str(tmp_path))
    spans = entities.SpanSource("gazetteer:$BERTJAX_DATA/names.txt", "config.task.entities")
    assert spans.mark("이순신은 장군이다") == "[ENT] 이순신 [/ENT]은 장군이다"
    with pytest.raises(FileNotFoundError, match=r"config\.task\.entities=.*missing\.txt"):
        entities.SpanSource("gazetteer:$BERTJAX_DATA/missing.txt", "config.task.entities")
