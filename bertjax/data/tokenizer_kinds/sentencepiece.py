"""SentencePiece unigram in Marian's layout: `config.data.tokenizer="sentencepiece"`.

A tokenizer folder holds what `transformers.MarianTokenizer` reads: `source.spm` and
`target.spm` (SentencePiece models of each side), `vocab.json` (token -> id, shared by both
sides) and `tokenizer_config.json`. `source.spm` names the kind (`VOCAB_NAME`); the ids are those
of `vocab.json`, as in Marian: `</s>` 0 (end of sequence), `<unk>` 1, the pieces, and `<pad>`
last (padding, and the decoder's start token).

`train` learns one shared unigram model with the `sentencepiece` library on both sides of the
parallel corpus (`bertjax.data.parallel`) and writes it as both `source.spm` and `target.spm`.
`load` builds a `tokenizers` Unigram tokenizer that encodes as MarianTokenizer does: the model's
normalization (its precompiled NFKC map, whitespace cleanup, the dummy prefix), Viterbi over the
pieces with the model's scores, the ids of `vocab.json`, and `</s>` appended with
`add_special_tokens=True`. `side="target"` loads `target.spm` (an imported opus-mt model has
two different models over one `vocab.json`); a token of `vocab.json` that the side's model does
not have scores below all of its pieces.
"""

from __future__ import annotations

import io
import json
import pathlib
from collections.abc import Iterable

import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors

VOCAB_NAME = "source.spm"
TARGET_NAME = "target.spm"
IDS_NAME = "vocab.json"
CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS = {"eos": "</s>", "unk": "<unk>", "pad": "<pad>"}
MODEL = models.Unigram
SIDES = ("source", "target")
UNSEEN_PENALTY = 10.0  # a vocab.json token the side's model lacks: below its worst piece by this


def train(files, out_dir: pathlib.Path, config) -> pathlib.Path:
    """`train_sentencepiece` with `config.model.vocab_size` tokens (`<pad>` included) on both
    sides of the parallel corpus `files` read with `config.data.reader` or, for a config
    without one, on the lines of text files."""
    from bertjax.data import parallel
    from bertjax.data.tokenizer import line_pieces

    if "reader" in config.data:
        pairs = parallel.read_pairs(files, dict(config.data.reader))
        texts = (text for pair in pairs for text in pair)
    else:
        texts = line_pieces([str(f) for f in files])
    return train_sentencepiece(texts, out_dir, vocab_size=config.model.vocab_size)


def train_sentencepiece(
    texts: Iterable[str],
    out_dir: str | pathlib.Path,
    *,
    vocab_size: int = 8000,
    character_coverage: float = 0.9995,
    seed_sentencepiece_size: int = 100_000,
) -> pathlib.Path:
    """Trains a shared unigram model and writes Marian's tokenizer files into `out_dir`.

    Args:
      texts: sentences of both languages.
      out_dir: created if missing.
      vocab_size: tokens of `vocab.json` (the pieces, `</s>`, `<unk>` and `<pad>`); a small
        corpus may give fewer.
      character_coverage: share of the characters seen that get a piece (rarer: `<unk>`).
      seed_sentencepiece_size: initial pieces of the unigram trainer.

    Returns:
      The path of `source.spm`.
    """
    import sentencepiece as spm

    if vocab_size < 8:
        raise ValueError(f"config.model.vocab_size={vocab_size} is too small (at least 8)")
    model = io.BytesIO()
    try:
        _train(spm, texts, model, vocab_size, character_coverage, seed_sentencepiece_size)
    except RuntimeError as e:  # the trainer's checks, e.g. fewer pieces than characters
        raise ValueError(
            f"SentencePiece training failed with config.model.vocab_size={vocab_size}: "
            f"{str(e).splitlines()[0]}"
        ) from None
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (VOCAB_NAME, TARGET_NAME):
        (out / name).write_bytes(model.getvalue())
    pieces = [p.piece for p in _proto(out / VOCAB_NAME).pieces]
    ids = {piece: i for i, piece in enumerate(pieces)} | {SPECIAL_TOKENS["pad"]: len(pieces)}
    _write_json(out / IDS_NAME, ids)
    _write_json(out / CONFIG_NAME, marian_tokenizer_config())
    return out / VOCAB_NAME


def _train(spm, texts, model, vocab_size, character_coverage, seed_sentencepiece_size) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(t for t in texts if t.strip()),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size - 1,  # <pad> is vocab.json's own
        hard_vocab_limit=False,
        character_coverage=character_coverage,
        seed_sentencepiece_size=seed_sentencepiece_size,
        eos_id=0,
        unk_id=1,
        bos_id=-1,
        pad_id=-1,
        eos_piece=SPECIAL_TOKENS["eos"],
        unk_piece=SPECIAL_TOKENS["unk"],
        num_threads=1,
        minloglevel=2,
    )


def marian_tokenizer_config(model_max_length: int = 512) -> dict:
    """The `tokenizer_config.json` transformers' MarianTokenizer reads (one shared vocab)."""
    return {
        "tokenizer_class": "MarianTokenizer",
        "model_max_length": model_max_length,
        "separate_vocabs": False,
        **{f"{key}_token": token for key, token in SPECIAL_TOKENS.items()},
    }


def load(vocab_path, side: str = "source", **options) -> tokenizers.Tokenizer:
    """The tokenizer of one side of a Marian tokenizer folder (`source.spm` named by
    `vocab_path`); WordPiece's options (`lowercase`, ...) do not apply and are ignored."""
    del options
    if side not in SIDES:
        raise ValueError(f"side={side!r} is invalid: allowed values are {SIDES}")
    folder = pathlib.Path(vocab_path).parent
    proto = _proto(folder / (VOCAB_NAME if side == "source" else TARGET_NAME))
    vocab = read_vocab(vocab_path)
    for key, token in SPECIAL_TOKENS.items():
        if token not in vocab:
            raise ValueError(f"{folder / IDS_NAME} has no {token} ({key}) token")
    scores = {p.piece: p.score for p in proto.pieces if p.type in (1, 4)}  # NORMAL, USER_DEFINED
    unseen = min(scores.values(), default=0.0) - UNSEEN_PENALTY
    special = set(SPECIAL_TOKENS.values())
    pieces = [(t, 0.0 if t in special else scores.get(t, unseen)) for t in vocab]
    model = models.Unigram(pieces, unk_id=vocab.index(SPECIAL_TOKENS["unk"]), byte_fallback=False)
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.normalizer = _normalizer(proto.normalizer_spec)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="always", split=False
    )
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in special])
    eos = SPECIAL_TOKENS["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A $B {eos}", special_tokens=[(eos, vocab.index(eos))]
    )
    return tokenizer


def _normalizer(spec) -> normalizers.Normalizer:
    """SentencePiece's normalization in its order: the character map, whitespace cleanup,
    spaces as "▁" and the dummy prefix (kept even where the text starts with "▁")."""
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [
            normalizers.Replace(Regex(r"\A +| +\z"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    return normalizers.Sequence(steps)


def read_vocab(vocab_path) -> list[str]:
    """The tokens of the `vocab.json` beside `source.spm`, by id."""
    path = pathlib.Path(vocab_path).parent / IDS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"SentencePiece tokenizer {vocab_path} has no {path} beside it")
    ids = json.loads(path.read_text(encoding="utf-8"))
    tokens = sorted(ids, key=ids.get)
    if [ids[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"vocabulary {path}: ids are not 0..{len(tokens) - 1}")
    return tokens


def files(vocab_path: pathlib.Path) -> list[pathlib.Path]:
    """`source.spm`, `target.spm`, `vocab.json` and `tokenizer_config.json` (when present)."""
    folder = pathlib.Path(vocab_path).parent
    names = (VOCAB_NAME, TARGET_NAME, IDS_NAME, CONFIG_NAME)
    return [folder / n for n in names if (folder / n).is_file() or n != CONFIG_NAME]


def _proto(path: pathlib.Path):
    from sentencepiece import sentencepiece_model_pb2

    if not path.is_file():
        raise FileNotFoundError(f"SentencePiece model {path} does not exist")
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def _write_json(path: pathlib.Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
