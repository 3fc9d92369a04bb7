"""Sub-word tokens back to the words of the text, with character spans for highlighting.

WordPiece (and BPE) split "costophrenic" into several tokens; a reader wants one score per word.
A word's relevance is the SUM of its tokens' (relevance is additive over inputs, so a long word is
not penalised for being split). Spans index the original text, so a renderer can colour the text as
written, whitespace and line breaks included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WordSpans:
    words: list[str]
    spans: list[tuple[int, int]]      # [start, end) character offsets into the text
    token_word: np.ndarray            # [L] word index of each token, -1 for special and padding tokens


def word_spans(bundle, text: str) -> WordSpans:
    """Word segmentation of `text` aligned with `bundle.tokenizer([text])`'s tokens (same truncation)."""
    token_spans = bundle.tokenizer.token_spans(text)
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    token_word = np.full(len(token_spans), -1, dtype=np.int64)
    index_of: dict[int, int] = {}
    for position, span in enumerate(token_spans):
        if span is None:
            continue
        start, end, word_id = span
        if word_id not in index_of:
            index_of[word_id] = len(words)
            words.append("")
            spans.append((start, end))
        k = index_of[word_id]
        spans[k] = (spans[k][0], end)
        token_word[position] = k
    words = [text[a:b] for a, b in spans]
    return WordSpans(words, spans, token_word)


def merge_to_words(token_relevance: np.ndarray, segmentation: WordSpans) -> np.ndarray:
    """[L] token relevance -> [n_words] (sum over each word's tokens)."""
    out = np.zeros(len(segmentation.words), dtype=np.float64)
    n = min(len(token_relevance), len(segmentation.token_word))
    index = segmentation.token_word[:n]
    keep = index >= 0
    np.add.at(out, index[keep], np.asarray(token_relevance[:n], dtype=np.float64)[keep])
    return out.astype(np.float32)
