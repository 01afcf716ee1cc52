"""Tokenizers, whatever the kind, and the WordPiece kind (BERT's `vocab.txt`).

The kinds are registered in `bertjax.data.tokenizer_kinds` (WordPiece; byte-level BPE, GPT-2's
`vocab.json` + `merges.txt`, in `tokenizer_kinds/byte_bpe.py`), picked by `config.data.tokenizer`
to train. A tokenizer is named by its vocabulary file; the name says the kind (`tokenizer_kind`):
`vocab.txt` (or any other name) is WordPiece, `vocab.json` is byte-level BPE with `merges.txt`
beside it. `load_tokenizer`, `read_vocab`, `special_token_ids` and `tokenizer_files` work on every
kind, so data preparation, model directories and jobs pass one path whatever the kind.

WordPiece builds on Hugging Face `tokenizers` with BERT's normalizer (clean text, optional
lowercasing and accent stripping, spaces around CJK characters) and pre-tokenizer (split on
whitespace and punctuation). The normalization options live in `bertjax_tokenizer.json` beside the
vocabulary so that a vocabulary and the way it must be used travel together; `tokenizer.json`
(the `tokenizers` serialization of the exact tokenizer) and a transformers
`tokenizer_config.json` go with them, so `transformers.AutoTokenizer.from_pretrained(folder)`
gives the same ids. Folders written before keep bertjax's options in `tokenizer_config.json`;
they still load.

Vocabularies trained here set `keep_hangul`: the text is recomposed (NFC) after normalization, so
Hangul syllables, which BERT's accent stripping splits into conjoining jamo through NFD, stay whole.
Vocabularies without the option (bert-base-*, models imported from transformers) are read as
transformers reads them.

`pretokenizer` picks how text is split into words before WordPiece: "whitespace" (BERT's split
on whitespace and punctuation) or "morpheme" (Korean morphemes from the MeCab-ko analyzer first,
`bertjax.data.morpheme`; the `korean` extra). A morpheme tokenizer is rebuilt from the options on
every load; transformers cannot reproduce it, so its folder has no `tokenizer.json`.
"""

from __future__ import annotations

import collections
import json
import logging
import pathlib
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from bertjax.data import tokenizer_kinds
from bertjax.data.entities import ENTITY_MARKERS
from bertjax.data.text import TextFile

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
OPTIONS_NAME = "bertjax_tokenizer.json"  # bertjax's options (below)
CONFIG_NAME = "tokenizer_config.json"  # transformers' (older bertjax folders: the options)
TOKENIZER_JSON = "tokenizer.json"  # the tokenizers serialization, read by transformers
VOCAB_NAME = "vocab.txt"
BPE_VOCAB_NAME = "vocab.json"  # byte-level BPE: token -> id, with MERGES_NAME beside it
MERGES_NAME = "merges.txt"
END_OF_TEXT = "<|endoftext|>"  # GPT-2's document separator (and unconditional start)
CONTINUATION_PREFIX = "##"
OPTIONS = ("lowercase", "strip_accents", "handle_chinese_chars", "keep_hangul", "pretokenizer")
PRETOKENIZERS = ("whitespace", "morpheme")  # values of the `pretokenizer` option
HANGUL_SYLLABLES = (0xAC00, 0xD7A3)  # first and last code point of the precomposed syllables


def train_wordpiece(
    files: Sequence[str | pathlib.Path],
    out_dir: str | pathlib.Path,
    *,
    vocab_size: int = 30522,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    handle_chinese_chars: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int | None = 1000,
    pretokenizer: str = "whitespace",
    entity_markers: bool = False,
) -> pathlib.Path:
    """Trains a WordPiece vocabulary on text files; the same files and options give the same bytes.

    The five special tokens come first: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; then the
    alphabet, its `##` continuations and the merged pieces in the order they were learnt. The
    tokenizer options are written with `keep_hangul=True` (and `pretokenizer` unless
    "whitespace").

    Args:
      files: UTF-8 text files to learn the vocabulary from.
      out_dir: Folder that receives `vocab.txt` and the tokenizer files (`write_tokenizer_files`;
        created if missing).
      vocab_size: Size of the vocabulary, special tokens included.
      lowercase: Lowercase text before splitting it.
      strip_accents: Remove accents (NFD then drop combining marks); None follows `lowercase`,
        as in the original BERT. Hangul syllables are kept either way.
      handle_chinese_chars: Put spaces around CJK ideographs so each is its own word.
      min_frequency: Minimum count for a merge to enter the vocabulary.
      limit_alphabet: Maximum number of distinct characters kept besides Hangul syllables (every
        syllable seen is kept: it has no smaller piece to fall back on); the most frequent win,
        ties by code point. None keeps all.
      pretokenizer: How words are split before WordPiece (`PRETOKENIZERS`): "whitespace"
        (BERT's) or "morpheme" (Korean morphemes first; needs the `korean` extra).
      entity_markers: Also reserve `[ENT]` and `[/ENT]` (entity-aware BERT,
        `config.model.entity_vocab_size > 0`), right after the special tokens.

    Returns:
      Path of the written `vocab.txt`.
    """
    files = [str(f) for f in files]
    for f in files:
        if not pathlib.Path(f).is_file():
            raise FileNotFoundError(f"train_wordpiece: training file {f} does not exist")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    options = dict(
        lowercase=lowercase,
        strip_accents=strip_accents,
        handle_chinese_chars=handle_chinese_chars,
        keep_hangul=True,
    )
    if _check_pretokenizer(pretokenizer) != "whitespace":  # whitespace folders stay as before
        options["pretokenizer"] = pretokenizer
    tokenizer = _build_tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk"]), **options)
    alphabet, inner = _alphabet(files, tokenizer, limit_alphabet)
    # The tokenizers trainer gives the `##` pieces of the alphabet ids in hash-map order and breaks
    # ties between merge counts by id, so two runs learn different vocabularies
    # (https://github.com/huggingface/tokenizers/issues/1794). Fixing the alphabet here and passing
    # the `##` pieces as special tokens gives every id before the first merge in sorted order.
    continuations = [CONTINUATION_PREFIX + c for c in inner]
    markers = list(ENTITY_MARKERS) if entity_markers else []
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        limit_alphabet=len(alphabet),  # drops exactly the characters not in `alphabet`
        initial_alphabet=alphabet,
        special_tokens=list(SPECIAL_TOKENS.values()) + markers + continuations,
        continuing_subword_prefix=CONTINUATION_PREFIX,
        show_progress=False,
    )
    tokenizer.train_from_iterator(line_pieces(files), trainer)
    vocab = tokenizer.get_vocab()
    group = dict.fromkeys([*SPECIAL_TOKENS.values(), *markers], 0)
    group |= dict.fromkeys(alphabet, 1) | dict.fromkeys(continuations, 2)
    out = pathlib.Path(out_dir)  # made once the text was read (a refused file leaves no folder)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path = out / VOCAB_NAME
    _write_vocab(sorted(vocab, key=lambda t: (group.get(t, 3), vocab[t])), vocab_path)
    write_tokenizer_files(out, vocab_path, options)
    return vocab_path


def write_tokenizer_files(
    out_dir: str | pathlib.Path,
    vocab_path: str | pathlib.Path,
    options: dict,
    *,
    model_max_length: int = 512,
) -> None:
    """Writes the tokenizer files of a vocabulary into `out_dir`.

    `bertjax_tokenizer.json` (the options as given), `tokenizer.json` (the exact tokenizer
    `load_tokenizer` builds, normalizer included) and a transformers `tokenizer_config.json`
    (`PreTrainedTokenizerFast` over `tokenizer.json`, the special tokens, BERT's three inputs),
    so that `transformers.AutoTokenizer.from_pretrained(out_dir)` encodes as bertjax does.

    Args:
      out_dir: An existing folder.
      vocab_path: The `vocab.txt` the tokenizer is built from.
      options: bertjax tokenizer options (`OPTIONS`); missing ones take BERT's defaults.
      model_max_length: The longest input transformers should allow.
    """
    out = pathlib.Path(out_dir)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"tokenizer options {unknown} are unknown; allowed: {list(OPTIONS)}")
    resolved = resolve_options(options)
    _write_json(out / OPTIONS_NAME, dict(options))
    if resolved["pretokenizer"] != "whitespace":
        # A custom (Python) pre-tokenizer has no tokenizer.json form; transformers would
        # silently split words BERT's way, so it gets no files to do that with.
        for name in (TOKENIZER_JSON, CONFIG_NAME):
            (out / name).unlink(missing_ok=True)
        logger.warning(
            "%s: pretokenizer=%r cannot be saved as %s; transformers cannot reproduce this "
            "tokenizer (bertjax rebuilds it from %s)",
            out,
            resolved["pretokenizer"],
            TOKENIZER_JSON,
            OPTIONS_NAME,
        )
        return
    load_tokenizer(vocab_path, **resolved).save(str(out / TOKENIZER_JSON))
    transformers_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # honours tokenizer.json's normalizer
        "do_lower_case": resolved["lowercase"],
        "strip_accents": resolved["strip_accents"],
        "tokenize_chinese_chars": resolved["handle_chinese_chars"],
        "model_max_length": model_max_length,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **{f"{key}_token": token for key, token in SPECIAL_TOKENS.items()},
    }
    _write_json(out / CONFIG_NAME, transformers_config)


def resolve_options(options: dict) -> dict:
    """All the options, BERT's defaults where `options` has none (strip_accents follows
    lowercase, pretokenizer is "whitespace")."""
    lowercase = options.get("lowercase", True)
    strip_accents = options.get("strip_accents")
    return {
        "lowercase": lowercase,
        "strip_accents": lowercase if strip_accents is None else strip_accents,
        "handle_chinese_chars": options.get("handle_chinese_chars", True),
        "keep_hangul": options.get("keep_hangul", False),
        "pretokenizer": _check_pretokenizer(options.get("pretokenizer", "whitespace")),
    }


def _check_pretokenizer(value: str) -> str:
    if value not in PRETOKENIZERS:
        raise ValueError(f"tokenizer option pretokenizer={value!r}; allowed: {list(PRETOKENIZERS)}")
    return value


def read_options(folder: str | pathlib.Path) -> dict:
    """The bertjax tokenizer options saved in `folder` ({} if none).

    From `bertjax_tokenizer.json`; else from `tokenizer_config.json`, which folders written
    before held bertjax's keys in, and which transformers folders hold as `do_lower_case`,
    `strip_accents`, `tokenize_chinese_chars` (mapped to bertjax's keys).
    """
    folder = pathlib.Path(folder)
    if (folder / OPTIONS_NAME).is_file():
        return _read_config(folder / OPTIONS_NAME)
    document = _read_json(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else {}
    if set(document) <= set(OPTIONS):
        return document
    names = {
        "do_lower_case": "lowercase",
        "strip_accents": "strip_accents",
        "tokenize_chinese_chars": "handle_chinese_chars",
        "keep_hangul": "keep_hangul",
    }
    return {ours: document[theirs] for theirs, ours in names.items() if theirs in document}


# Longer lines are cut into pieces of this many bytes. tokenizers' trainer buffers 256 items of
# the iterator: 256 x 64 KiB = 16 MiB (pieces of 1 MiB took 324 MB for one 50 MB line).
MAX_PIECE_BYTES = 1 << 16


def line_pieces(files: Sequence[str], *, report: bool = True) -> Iterator[str]:
    """The lines of `files` (`TextFile`: invalid UTF-8 repaired or refused), a line longer than
    `MAX_PIECE_BYTES` cut into pieces of that size, as data preparation cuts them: the tokenizer
    trainer holds a few pieces at a time, not a whole 50 MB line (4 GB of memory for one such
    line). `report`: warn about each file's repaired lines."""
    for path in files:
        with TextFile(path, "a tokenizer training file", report=report) as f:
            for piece, _ in f.pieces(MAX_PIECE_BYTES):
                yield piece


def _alphabet(
    files: Sequence[str], tokenizer: tokenizers.Tokenizer, limit: int | None
) -> tuple[list[str], list[str]]:
    """The characters that `tokenizer`'s normalizer makes of `files`, and those that continue words.

    Characters are counted in the text (in NFC, as the normalizer leaves it) and normalized one
    at a time, which is much faster than normalizing the text and, as the normalizer works
    character by character, gives the same characters.

    Returns:
      (alphabet, inner): the kept characters, and those of them that a word can continue with
      (all but whitespace, punctuation and split CJK ideographs), both sorted by code point.
    """
    raw, chunk, size = collections.Counter(), [], 0
    for piece in line_pieces(files, report=False):  # reported by the training pass
        chunk.append(piece)
        size += len(piece)
        if size >= 1 << 20:  # about 1 MiB of lines at a time
            raw.update(unicodedata.normalize("NFC", "".join(chunk)))
            chunk, size = [], 0
    raw.update(unicodedata.normalize("NFC", "".join(chunk)))
    if not raw:
        logger.warning(
            "the tokenizer training files %s hold no text: the vocabulary will hold only the "
            "special tokens",
            list(files),
        )
    # BERT's split, whatever the tokenizer's: a character that continues a word there may
    # continue a morpheme too, and the analyzer is slow on one character at a time.
    normalize = tokenizer.normalizer.normalize_str
    words = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    counts = collections.Counter()
    for c, n in raw.items():
        for out in normalize(c):
            counts[out] += n
    first, last = HANGUL_SYLLABLES
    seen = [c for c in counts if words(c)]  # whitespace makes no word
    hangul = [c for c in seen if first <= ord(c) <= last]
    others = sorted(set(seen) - set(hangul), key=lambda c: (-counts[c], c))
    alphabet = sorted(hangul + others[:limit])
    return alphabet, [c for c in alphabet if len(words(normalize("a" + c))) == 1]


def load_tokenizer(vocab_path: str | pathlib.Path, **options) -> tokenizers.Tokenizer:
    """Loads the tokenizer a vocabulary file names, of its kind (`tokenizer_kind`).

    Args:
      vocab_path: `vocab.txt` (WordPiece, `load_wordpiece`), `vocab.json` (byte-level BPE, with
        `merges.txt` beside it) or another kind's vocabulary file.
      **options: The kind's load options (WordPiece: `lowercase`, `strip_accents`, ...).

    Raises:
      FileNotFoundError: `vocab_path` does not exist.
    """
    if not pathlib.Path(vocab_path).is_file():
        raise FileNotFoundError(f"vocabulary file {vocab_path} does not exist")
    return tokenizer_kinds.get(tokenizer_kind(vocab_path)).load(vocab_path, **options)


def load_wordpiece(
    vocab_path: str | pathlib.Path,
    *,
    lowercase: bool | None = None,
    strip_accents: bool | None = None,
    handle_chinese_chars: bool | None = None,
    keep_hangul: bool | None = None,
    pretokenizer: str | None = None,
) -> tokenizers.Tokenizer:
    """Loads a WordPiece `vocab.txt` as a fast BERT tokenizer (`load_tokenizer` of that kind).

    Options left as None come from the options saved beside the vocabulary (`read_options`),
    otherwise from BERT's defaults (lowercase=True, strip_accents follows lowercase,
    handle_chinese_chars=True, keep_hangul=False, pretokenizer="whitespace": the tokenization of
    transformers). When the
    vocabulary has [CLS] and [SEP], encoding with `add_special_tokens=True` gives `[CLS] A [SEP]`
    and `[CLS] A [SEP] B [SEP]` with segment ids.

    Args:
      vocab_path: One token per line; the line number is the id.
      lowercase: Lowercase text before splitting it.
      strip_accents: Remove accents; None follows `lowercase`.
      handle_chinese_chars: Put spaces around CJK ideographs.
      keep_hangul: Recompose the normalized text (NFC) so that Hangul syllables stay whole; set
        for every vocabulary `train_wordpiece` writes.
      pretokenizer: "whitespace" or "morpheme" (`PRETOKENIZERS`). A morpheme tokenizer cannot be
        saved or pickled; load it again (in each worker process) instead.

    Returns:
      A `tokenizers.Tokenizer`.
    """
    vocab_path = pathlib.Path(vocab_path)
    options = (lowercase, strip_accents, handle_chinese_chars, keep_hangul, pretokenizer)
    # Read the options file beside the vocabulary only for options not given.
    config = read_options(vocab_path.parent) if None in options else {}
    if lowercase is None:
        lowercase = config.get("lowercase", True)
    if strip_accents is None:
        strip_accents = config.get("strip_accents")
    if handle_chinese_chars is None:
        handle_chinese_chars = config.get("handle_chinese_chars", True)
    if keep_hangul is None:
        keep_hangul = config.get("keep_hangul", False)
    if pretokenizer is None:
        pretokenizer = config.get("pretokenizer", "whitespace")
    vocab = read_vocab(vocab_path)
    if SPECIAL_TOKENS["unk"] not in vocab:
        raise ValueError(f"vocabulary {vocab_path} has no {SPECIAL_TOKENS['unk']} token")
    model = models.WordPiece(
        vocab={t: i for i, t in enumerate(vocab)},
        unk_token=SPECIAL_TOKENS["unk"],
        continuing_subword_prefix=CONTINUATION_PREFIX,
    )
    tokenizer = _build_tokenizer(
        model,
        lowercase=lowercase,
        strip_accents=strip_accents,
        handle_chinese_chars=handle_chinese_chars,
        keep_hangul=keep_hangul,
        pretokenizer=_check_pretokenizer(pretokenizer),
    )
    # Special tokens written in text ("a [MASK] b") stay whole, as in BERT.
    tokenizer.add_special_tokens(
        [
            tokenizers.AddedToken(t, special=True)
            for t in (*SPECIAL_TOKENS.values(), *ENTITY_MARKERS)
            if t in vocab
        ]
    )
    cls, sep = SPECIAL_TOKENS["cls"], SPECIAL_TOKENS["sep"]
    if cls in vocab and sep in vocab:
        ids = {cls: vocab.index(cls), sep: vocab.index(sep)}
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=list(ids.items()),
        )
    return tokenizer


def special_token_ids(tokenizer: tokenizers.Tokenizer, vocab_path: str = "") -> dict[str, int]:
    """Returns the ids of [PAD], [UNK], [CLS], [SEP] and [MASK] under keys pad/unk/cls/sep/mask.

    For a byte-level BPE tokenizer: `eos` (and `pad`, the same id: padding is masked out) of
    <|endoftext|>.

    Args:
      tokenizer: A tokenizer from `load_tokenizer`.
      vocab_path: Named in the error message when a special token is missing.

    Raises:
      ValueError: A special token is not in the vocabulary.
    """
    ids = {}
    for key, token in tokenizer_kinds.of_tokenizer(tokenizer).SPECIAL_TOKENS.items():
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            where = f"vocabulary {vocab_path}" if vocab_path else "the tokenizer's vocabulary"
            raise ValueError(f"special token {token} ({key}) is missing from {where}")
        ids[key] = token_id
    return ids


def read_vocab(vocab_path: str | pathlib.Path) -> list[str]:
    """Reads `vocab.txt` (or another kind's vocabulary, e.g. a BPE `vocab.json`) into a list of
    tokens (index = id)."""
    return tokenizer_kinds.get(tokenizer_kind(vocab_path)).read_vocab(vocab_path)


def read_wordpiece_vocab(vocab_path: str | pathlib.Path) -> list[str]:
    """Reads a WordPiece `vocab.txt`: one token per line, the line number is the id."""
    with open(vocab_path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise ValueError(f"vocabulary file {vocab_path} is empty")
    return tokens


def _build_tokenizer(
    model: models.Model,
    *,
    lowercase: bool,
    strip_accents: bool | None,
    handle_chinese_chars: bool,
    keep_hangul: bool,
    pretokenizer: str = "whitespace",
) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(model)
    bert = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=handle_chinese_chars,
        strip_accents=strip_accents,
        lowercase=lowercase,
    )
    # NFC puts back together the Hangul syllables that accent stripping's NFD splits into jamo
    # (and any other composition whose marks are not stripped); offsets still map to the input.
    tokenizer.normalizer = normalizers.Sequence([bert, normalizers.NFC()]) if keep_hangul else bert
    if pretokenizer == "morpheme":
        from bertjax.data import morpheme  # the analyzer only where asked for

        tokenizer.pre_tokenizer = morpheme.morpheme_pre_tokenizer()
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    return tokenizer


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def _write_json(path: pathlib.Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _read_config(path: pathlib.Path) -> dict:
    config = _read_json(path)
    unknown = set(config) - set(OPTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}; allowed: {list(OPTIONS)}")
    return config


def _write_vocab(tokens: Iterable[str], path: pathlib.Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for token in tokens:
            f.write(token + "\n")


def tokenizer_kind(vocab_path: str | pathlib.Path) -> str:
    """The `tokenizer_kinds` name of a vocabulary file: "byte_bpe" for a `vocab.json`
    (merges.txt beside it), else "wordpiece"."""
    return tokenizer_kinds.kind_of(vocab_path)


def tokenizer_files(vocab_path: str | pathlib.Path) -> list[pathlib.Path]:
    """The files that make up the tokenizer named by `vocab_path`, to copy together:
    `vocab.json` and `merges.txt`, or `vocab.txt` and its `tokenizer_config.json` if any."""
    return tokenizer_kinds.get(tokenizer_kind(vocab_path)).files(pathlib.Path(vocab_path))


def wordpiece_files(vocab_path: pathlib.Path) -> list[pathlib.Path]:
    """`vocab.txt` and its `tokenizer_config.json` if any."""
    config = vocab_path.parent / CONFIG_NAME
    return [vocab_path, *([config] if config.is_file() else [])]
