"""What the package calls a word, in one place.

A word is a run of word characters with inner apostrophes or hyphens (``don't``,
``state-of-the-art``); every other non-space character is a word of its own (punctuation).
The attributions (:func:`explain_callbacks.attribution.adapters._words_from_encoding` merges a tokenizer's
pieces into these spans, where its offsets allow) and the training statistics (from texts, or
from input ids decoded back to text) both use it, so a word counted in training is the word
the attributions score.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any, Sequence

WORD_SPAN_RE = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")
WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*")
# WordPiece-style decoders put spaces around punctuation: "don ' t", "state - of"
_SPACED_JOINER = re.compile(r"(?<=\w) ([-'’]) (?=\w)")


def word_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of every word (and punctuation mark) of ``text``."""
    return [m.span() for m in WORD_SPAN_RE.finditer(text)]


def span_index(spans: Sequence[tuple[int, int]], position: int) -> int | None:
    """The index of the span of :func:`word_spans` holding character ``position``, or ``None``."""
    i = bisect_right([s for s, _ in spans], position) - 1
    return i if i >= 0 and spans[i][0] <= position < spans[i][1] else None


def is_word(text: str) -> bool:
    """Whether ``text`` is one whole word (not punctuation, not several words)."""
    return WORD_RE.fullmatch(text) is not None


def text_spans(text: str) -> list[str]:
    """The lowercase words and punctuation marks of ``text`` in order (:func:`word_spans`)."""
    return WORD_SPAN_RE.findall(text.lower())


def text_words(text: str) -> list[str]:
    """The lowercase words of ``text`` in order (punctuation left out)."""
    return WORD_RE.findall(text.lower())


# Phrases are runs of up to this many neighbouring words ("sent from my iphone").
PHRASE_MAX_WORDS = 4


def adjacent_phrases(words: Sequence[str], max_words: int = PHRASE_MAX_WORDS) -> list[str]:
    """``"a b"``, ``"a b c"``, ... for each run of 2 to ``max_words`` neighbouring words."""
    return [" ".join(words[i:i + n]) for n in range(2, max_words + 1) for i in range(len(words) - n + 1)]


class IdsToWords:
    """Input ids back to words: the tokenizer's own decode, then :func:`text_words`.

    Decoders that space punctuation out (WordPiece: ``"don ' t"``) lose whether a hyphen or an
    apostrophe was attached; such ``" - "`` / ``" ' "`` between two words are joined again, as
    written text almost always has them. A lossless decoder (byte-level BPE) is left alone.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.pad_token_id = getattr(tokenizer, "pad_token_id", None)
        self.rejoin = not self._lossless()

    def _lossless(self) -> bool:
        text = "well-known don't"
        try:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            decoded = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        except Exception:  # a tokenizer that cannot say: rejoin (the common WordPiece case)
            return False
        return decoded.strip() == text

    def strip_padding(self, ids: Sequence[int]) -> list[int]:
        return [int(i) for i in ids if i != self.pad_token_id]

    def __call__(self, ids: Sequence[int]) -> list[str]:
        return self.many([ids])[0]

    def many(self, rows: Sequence[Sequence[int]]) -> list[list[str]]:
        """The words of several id sequences (one batched decode)."""
        return [text_words(t) for t in self.texts(rows)]

    def texts(self, rows: Sequence[Sequence[int]]) -> list[str]:
        """Several id sequences decoded back to text (one batched decode), punctuation kept."""
        texts = self.tokenizer.batch_decode([list(r) for r in rows], skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)
        if self.rejoin:
            texts = [_SPACED_JOINER.sub(r"\1", t) for t in texts]
        return texts
