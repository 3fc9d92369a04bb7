"""Where a report's sentences are: the unit that "sentence_query" text towers encode on their own.

A sentence ends at ".", "!" or "?" followed by white space, or at a line break (report sections and
ECG statements are one per line). A decimal ("0.5 mV") or an abbreviation followed by a digit does
not end one; "Dr. Smith" does, which costs nothing but one short extra sentence.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of the text's sentences, stripped of surrounding white space, in order."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in [*_SENTENCE_END.finditer(text), None]:
        end = match.start() if match is not None else len(text)
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            offset = start + (len(piece) - len(piece.lstrip()))
            spans.append((offset, offset + len(stripped)))
        if match is not None:
            start = match.end()
    return spans


def split_sentences(text: str) -> list[str]:
    """The text's sentences (see `sentence_spans`)."""
    return [text[a:b] for a, b in sentence_spans(text)]
