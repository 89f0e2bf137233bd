"""Text normalization shared by decontamination and near-dedup: case, whitespace, punctuation.

    words("Compute 2+3, then ÉTÉ!")  ->  ["compute", "2", "3", "then", "ete"]

Lower case; every character that is not a letter or a digit (punctuation, symbols, underscore,
whitespace) separates words; accents are dropped (NFKD, combining marks removed) when the text
is not ASCII. Numbers are kept as they are: "2+3" and "7+8" stay different, where datatrove's
default `simplify_text` maps every number to 0 and so makes all arithmetic problems of one
shape identical. On ASCII text this is the word sequence of datatrove's `simplify_text` with
`norm_numbers=False` split on whitespace (bench/curate.py checks that on its corpus).
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[^\W_]+")


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The normalized words of `text` (module docstring)."""
    text = text.lower()
    if not text.isascii():
        text = _strip_accents(text)
    return _WORD.findall(text)


def shingles(tokens: list[str], n: int) -> list[str]:
    """The word n-grams of `tokens` joined by a space (one shingle of all of them when fewer
    than n)."""
    if len(tokens) < n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
