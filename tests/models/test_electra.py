"""ELECTRA: the family (roles, axes), the RTD objective, pretraining, HF parity, fine-tuning."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.interop import formats, model_dir
from bertjax.models import Model, get_family, head_spec
from bertjax.models.bert import BertConfig
from bertjax.models.bert import forward_flops as bert_flops
from bertjax.models.electra import ElectraConfig
from bertjax.objectives.rtd import ReplacedTokenDetection
from tests.conftest import REPO

ELECTRA = get_family("electra")
TINY = dict(
    vocab_size=100,
    embedding_size=16,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    generator_fraction=0.5,
)
PRETRAIN_HEADS = (head_spec("mlm"), head_spec("rtd"))


def inputs(vocab=100, batch=2, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, length * 2 // 3 :] = 0
    ids[1, length * 2 // 3 :] = 0
    types = np.zeros_like(ids)
    types[:, length // 2 :] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def init(cfg, heads):
    model = Model(ELECTRA, cfg, heads)
    return model, model.init(jax.random.key(0), inputs())["params"]


@pytest.mark.parametrize("scan", [False, True])
def test_params_have_logical_axes_and_fine_tuning_has_no_generator(scan):
    cfg = ElectraConfig(**TINY, scan_layers=scan)
    _, params = init(cfg, PRETRAIN_HEADS)
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(
        isinstance(p, nn.Partitioned) and len(p.names) == p.value.ndim for p in leaves
    )
    backbone = nn.meta.unbox(params)["backbone"]
    assert set(backbone) == {"embeddings", "discriminator", "generator"}
    assert backbone["embeddings"]["word_embeddings"]["embedding"].shape == (100, 16)
    assert backbone["discriminator"]["embeddings_project"]["kernel"].shape == (16, 32)
    assert "embeddings_project" not in backbone["generator"]  # E = generator H = 16
    layers = backbone["generator"]["encoder"]
    query = (layers["layers"] if scan else layers["layer_0"])["attention"]["query"]["kernel"]
    assert query.shape == ((2,) if scan else ()) + (16, 2, 8)  # generator: half width and heads
    _, tuned = init(cfg, (head_spec("classifier", num_labels=3),))
    assert set(nn.meta.unbox(tuned)["backbone"]) == {"embeddings", "discriminator"}
    assert set(tuned["heads"]["classifier"]) == {"dense", "out_proj"}
    untied = ElectraConfig(**TINY, tie_embeddings=False)
    assert "generator_embeddings" in init(untied, PRETRAIN_HEADS)[1]["backbone"]


def test_roles_route_heads_and_config_checks():
    cfg = ElectraConfig(**TINY)
    model, params = init(cfg, PRETRAIN_HEADS)
    batch = {**inputs(), "masked_positions": np.array([[1, 2, 3]] * 2, np.int32)}
    gen = model.apply({"params": params}, batch, only=("mlm",))
    assert gen["sequence_output"].shape == (2, 12, 16) and gen["mlm_logits"].shape == (2, 3, 100)
    disc = model.apply({"params": params}, batch, only=("rtd",))
    assert disc["sequence_output"].shape == (2, 12, 32) and disc["rtd_logits"].shape == (2, 12)
    with pytest.raises(ValueError, match="config.model.generator_fraction=1.5"):
        ElectraConfig(**{**TINY, "generator_fraction": 1.5})
    with pytest.raises(ValueError, match="config.model.embedding_size=0"):
        ElectraConfig(**{**TINY, "embedding_size": 0})
    # One network with E = H and no pooler: BERT's FLOPs less the pooler's.
    same = ElectraConfig(**{**TINY, "embedding_size": 32})
    bert = BertConfig(**{k: v for k, v in TINY.items() if k in BertConfig.__dataclass_fields__})
    assert ELECTRA.forward_flops(same, 16) == bert_flops(bert, 16) - 2 * 32 * 32


class FakeModel:
    """Generator logits peaked on chosen ids; records the discriminator's input."""

    def __init__(self, peak_ids, vocab=100):
        self.peak_ids, self.vocab, self.seen = peak_ids, vocab, None

    def apply(self, variables, batch, *, deterministic, rngs, only):
        if only == ("mlm",):
            return {"mlm_logits": 100.0 * jax.nn.one_hot(self.peak_ids(batch), self.vocab)}
        self.seen = batch["input_ids"]
        return {"rtd_logits": jnp.zeros(batch["input_ids"].shape)}


def _objective_batch():
    from bertjax.objectives import masking

    def mask_fn(rng, batch):
        return masking.mask_batch(
            rng,
            batch,
            candidate_ids=jnp.arange(5, 100),
            mask_id=4,
            cls_id=2,
            sep_id=3,
            pad_id=0,
            max_predictions=4,
            mask_token_prob=1.0,
            random_token_prob=0.0,
        )

    raw = {k: jnp.asarray(v) for k, v in inputs().items()}
    raw["word_starts"] = raw["attention_mask"] > 0
    objective = ReplacedTokenDetection(mask_fn, 4)
    return objective, raw, objective.prepare(jax.random.key(1), raw)


def test_samples_equal_to_the_original_count_as_original():
    objective, raw, batch = _objective_batch()
    chosen = jnp.zeros_like(raw["input_ids"], bool)
    chosen = jax.vmap(lambda c, p, w: c.at[p].set(w > 0))(
        chosen, batch["masked_positions"], batch["masked_weights"]
    )
    assert bool(jnp.all(jnp.where(chosen, batch["input_ids"] == 4, True)))  # [MASK]-only

    honest = FakeModel(lambda b: b["masked_ids"])  # the generator always guesses right
    sums = objective.sums(honest, None, batch, None)
    assert float(sums["rtd_replaced"]) == 0.0
    np.testing.assert_array_equal(honest.seen, raw["input_ids"])  # the original sequence
    assert float(sums["mlm_correct"]) == float(sums["mlm_count"]) > 0

    wrong = FakeModel(lambda b: (b["masked_ids"] + 1) % 100)
    sums = objective.sums(wrong, None, batch, None)
    assert float(sums["rtd_replaced"]) == float(sums["mlm_count"])
    assert bool(jnp.all((wrong.seen != raw["input_ids"]) == chosen))
    assert float(sums["rtd_count"]) == float(raw["attention_mask"].sum())
    metrics = objective.summarize(jax.device_get(sums))
    assert metrics["rtd_recall"] == 0.0 and metrics["rtd_loss"] == pytest.approx(np.log(2))
    assert metrics["rtd_original_accuracy"] == 1.0  # logits 0: "original" everywhere
    assert metrics["generator_reward"] == pytest.approx(np.log(2))  # D's loss on the samples
    assert metrics["loss"] == pytest.approx(metrics["mlm_loss"] + 50.0 * np.log(2))


def test_flops_count_both_networks():
    objective, _, _ = _objective_batch()
    cfg = ElectraConfig(**TINY)
    total = objective.flops_per_sequence(ELECTRA, cfg, 16)
    disc = ELECTRA.forward_flops(cfg, 16)
    gen = ELECTRA.forward_flops(cfg, 16, role="generator")
    assert 0 < gen < disc and total > 3 * (disc + gen)


@pytest.fixture(scope="module")
def pretrained(prepared, tmp_path_factory):
    from bertjax.training.pretrain import pretrain

    workdir = tmp_path_factory.mktemp("electra")
    overrides = ["--config.train.num_steps=12", "--config.train.eval_every=6"]
    config = load_config(REPO / "configs" / "electra" / "test.py", [*prepared, *overrides])
    return workdir, pretrain(config, workdir)


def test_pretrain_job_trains_both_networks(pretrained):
    workdir, final = pretrained
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "rtd_accuracy" in r]
    assert train and all(np.isfinite(r["loss"]) for r in train)
    assert train[-1]["loss"] < train[0]["loss"]
    assert final["eval_replaced_share"] > 0
    assert final["eval_mlm_accuracy"] > 1 / formats.load_config(workdir).vocab_size  # not guessing
    model, params = formats.load_pretrained(workdir / "model")
    assert set(params["heads"]) == {"mlm", "rtd"}
    assert set(params["backbone"]) == {"embeddings", "discriminator", "generator"}


# ---------------------------------------------------------------------------------------------
# Hugging Face parity
# ---------------------------------------------------------------------------------------------

HF = dict(
    vocab_size=99,
    embedding_size=24,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)
GEN = dict(HF, hidden_size=16, num_attention_heads=2, intermediate_size=32)  # fraction 1/2


def _randomize(model, torch, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def write_vocab(path, size):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(words + [f"w{i}" for i in range(size - 5)]) + "\n")


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_pair(request, tmp_path_factory):
    """A random ElectraForPreTraining in d/ and ElectraForMaskedLM in d/generator/."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("hf_electra")
    disc = _randomize(
        transformers.ElectraForPreTraining(transformers.ElectraConfig(**HF)), torch, 0
    )
    gen = _randomize(transformers.ElectraForMaskedLM(transformers.ElectraConfig(**GEN)), torch, 1)
    if request.param:  # shared embedding tables, as ELECTRA trains them
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    disc.save_pretrained(path)
    gen.save_pretrained(path / "generator")
    for p in (path, path / "generator"):
        write_vocab(p / "vocab.txt", HF["vocab_size"])
    return path, request.param


def hf_logits(path, batch):
    import torch
    import transformers

    args = {k: torch.tensor(np.asarray(v), dtype=torch.long) for k, v in batch.items()}
    with torch.no_grad():
        disc = transformers.ElectraForPreTraining.from_pretrained(path).eval()(**args).logits
        gen = transformers.ElectraForMaskedLM.from_pretrained(path / "generator").eval()
        return disc.numpy(), gen(**args).logits.numpy()


def bertjax_logits(path, batch):
    model, params = formats.load_pretrained(path)
    out = model.apply({"params": params}, batch)
    return np.asarray(out["rtd_logits"]), np.asarray(out["mlm_logits"])


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_hf_import_and_export_match_transformers(hf_pair, tmp_path):
    path, tied = hf_pair
    batch = inputs(vocab=99, length=16)
    reference = hf_logits(path, batch)
    assert model_dir.import_hf(path, tmp_path / "bj") == []
    cfg = model_dir.read_model_config(tmp_path / "bj")
    assert cfg.tie_embeddings == tied and cfg.generator_fraction == 0.5
    ours = bertjax_logits(tmp_path / "bj", batch)
    print(f"electra import ({'tied' if tied else 'untied'}): {max_diff(ours, reference):.2e}")
    assert max_diff(ours, reference) < 1e-4
    model_dir.export_hf(tmp_path / "bj", tmp_path / "hf")
    again = hf_logits(tmp_path / "hf", batch)
    print(f"electra export: {max_diff(again, ours):.2e}")
    assert max_diff(again, ours) < 1e-4


def test_discriminator_alone_imports_with_a_fresh_generator(hf_pair, tmp_path):
    import shutil

    path, _ = hf_pair
    shutil.copytree(path, tmp_path / "d", ignore=shutil.ignore_patterns("generator"))
    fresh = model_dir.import_hf(tmp_path / "d", tmp_path / "bj")
    assert fresh and all(p.startswith(("backbone/generator", "heads/mlm")) for p in fresh)
    batch = inputs(vocab=99, length=16)
    np.testing.assert_allclose(
        bertjax_logits(tmp_path / "bj", batch)[0], hf_logits(path, batch)[0], atol=1e-4
    )


@pytest.mark.parametrize(
    "kind,head,arch",
    [
        ("classification", "classifier", "ElectraForSequenceClassification"),
        ("tagging", "tagger", "ElectraForTokenClassification"),
        ("qa", "span", "ElectraForQuestionAnswering"),
    ],
)
def test_fine_tuned_export_matches_transformers(kind, head, arch, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.interop import hf_electra
    from bertjax.tasks.assembly import make_model

    cfg = ElectraConfig(**{**TINY, "vocab_size": 99})
    model = make_model(kind, cfg, 3)
    batch = inputs(vocab=99, length=16)
    params = nn.meta.unbox(model.init(jax.random.key(2), batch)["params"])
    params = jax.tree.map(
        lambda x: x + 0.05 * np.random.default_rng(0).normal(size=x.shape), params
    )
    ours = model.apply({"params": params}, batch)
    write_vocab(tmp_path / "vocab.txt", 99)
    labels = ["a", "b", "c"]
    hf_electra.write_hf_task_files(
        tmp_path, jax.device_get(params), cfg, kind, labels, tmp_path / "vocab.txt"
    )
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [arch]
    theirs = getattr(transformers, arch).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = theirs(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()})
    keys = ("start_logits", "end_logits") if kind == "qa" else ("logits",)
    real = batch["attention_mask"] > 0
    for key in keys:
        a, b = np.asarray(ours[key]), getattr(out, key).numpy()
        if kind == "qa":  # bertjax scores padding very low; compare real tokens
            a, b = a[real], b[real]
        np.testing.assert_allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Fine-tuning an ELECTRA with the existing tasks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,extra,expected",
    [
        ("sst2", ["--config.task.max_train_examples=32"], {"accuracy", "f1", "mcc"}),
        ("conll2003", ["--config.task.max_train_examples=16"], {"precision", "recall", "f1"}),
    ],
)
def test_finetune_loads_the_discriminator(task, extra, expected, tmp_path):
    from bertjax.training.finetune import finetune
    from tests.conftest import data_dir

    vocab = data_dir() / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"real data folder {data_dir()} is absent (set BERTJAX_DATA)")
    cfg = ElectraConfig(**{**TINY, "vocab_size": 30522, "max_position_embeddings": 128})
    model_path = model_dir.save_model(tmp_path / "model", model_dir.init_params(cfg), cfg, vocab)
    overrides = [
        f"--config.init_from={model_path}",
        "--config.model.hidden_size=32",
        "--config.train.global_batch_size=8",
        "--config.train.num_epochs=1.0",
        "--config.checkpoint.async_save=False",
        "--config.task.max_eval_examples=16",
        "--config.task.max_len=32",
        *extra,
    ]
    config = load_config(REPO / "configs" / "finetune" / f"{task}.py", overrides)
    metrics = finetune(config, tmp_path / "run")
    assert expected <= set(metrics) and all(np.isfinite(v) for v in metrics.values())
    _, params = model_dir.load_model_dir(tmp_path / "run" / "model")
    assert set(params["backbone"]) == {"embeddings", "discriminator"}
