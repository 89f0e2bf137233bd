"""Pure text helpers of the workflows: passage segmentation, score and answer parsing.

    segment(text, max_chars=1500, min_chars=200)   # [{"heading", "kind", "text"}], deterministic
    parse_score(reply, lo=0, hi=5)                  # the rubric's "Score: N" (ValueError if none)
    extract_answer(reply)                           # \\boxed{...}, "Answer: ...", else last line
    normalize_answer(text)                          # case, punctuation, articles, whitespace

Segmentation reads markdown or plain text by structure: ATX headings (`# ...`), setext headings
(a line over `===` / `---`), plain-text headings (a short line of its own, numbered like "2.1
Title" or in capitals), paragraphs (blank-line separated) and fenced code blocks (``` or ~~~,
never split unless one alone exceeds `max_chars`, then at line ends). Blocks of one section are
packed in order into passages of at most `max_chars`: a block starts a new passage unless the
current one is under `min_chars` or a code block is on either side (code stays with the prose
that introduces and follows it) and both fit. Prose over `max_chars` is split at sentence ends,
a sentence over it at the last space that fits. A last passage under `min_chars` merges into the
one before it when both fit, else is dropped. Every passage is at most `max_chars` (a test
checks it, and that with min_chars=1 no word is lost).
"""

from __future__ import annotations

import re
import string
from typing import Any

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_PLAIN_HEADING = re.compile(r"^(\d+(\.\d+)*\.?\s+\S.*|[A-Z][A-Z0-9 ,:;'&()-]{2,})$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _blocks(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, heading level) blocks in order: heading, code, paragraph (level 0)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[str, str, int]] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(("paragraph", "\n".join(para).strip(), 0))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            marker, j = fence.group(1), i + 1
            while j < len(lines) and not lines[j].strip().startswith(marker[0] * len(marker)):
                j += 1
            out.append(("code", "\n".join(lines[i:j + 1]).rstrip(), 0))
            i = j + 1
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            out.append(("heading", atx.group(2), len(atx.group(1))))
        elif (_SETEXT.match(line) and len(para) == 1 and para[0].strip()
              and not (line.strip().startswith("-") and len(line.strip()) < 3)):
            title = para.pop().strip()
            flush()
            out.append(("heading", title, 1 if line.strip()[0] == "=" else 2))
        elif not line.strip():
            flush()
        elif (not para and _PLAIN_HEADING.match(line.strip()) and len(line.strip()) <= 80
              and (i + 1 >= len(lines) or not lines[i + 1].strip())):
            number = re.match(r"\d+(\.\d+)*", line.strip())
            out.append(("heading", line.strip(), 1 + number.group(0).count(".") if number else 1))
        else:
            para.append(line)
        i += 1
    flush()
    return [b for b in out if b[1]]


def _split_long(kind: str, text: str, max_chars: int) -> list[str]:
    """A block over max_chars in pieces of at most max_chars: code at line ends, prose at
    sentence ends, anything still too long at max_chars."""
    units = text.split("\n") if kind == "code" else _SENTENCE_END.split(text)
    joiner = "\n" if kind == "code" else " "
    pieces: list[str] = []
    current = ""
    for unit in units:
        while len(unit) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            cut = unit.rfind(" ", 1, max_chars + 1)  # at a space where there is one
            cut = cut if cut > 0 else max_chars
            pieces.append(unit[:cut].rstrip())
            unit = unit[cut:] if kind == "code" else unit[cut:].lstrip()
        candidate = f"{current}{joiner}{unit}" if current else unit
        if len(candidate) <= max_chars:
            current = candidate
        else:
            pieces.append(current)
            current = unit
    if current:
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def segment(text: str, *, max_chars: int = 1500, min_chars: int = 200) -> list[dict[str, Any]]:
    """Passages of a page (module docstring): {"heading": the section's heading path joined by
    " > " ('' before any heading), "kind": "code" when any block is code else "prose", "text"}."""
    if max_chars < 1 or min_chars > max_chars:
        raise ValueError(f"need 1 <= max_chars and min_chars <= max_chars "
                         f"(got {min_chars}, {max_chars})")
    sections: list[tuple[str, list[tuple[str, str]]]] = [("", [])]
    path: list[tuple[int, str]] = []
    for kind, block, level in _blocks(text):
        if kind == "heading":
            path = [p for p in path if p[0] < level] + [(level, block)]
            sections.append((" > ".join(t for _, t in path), []))
        else:
            for piece in (_split_long(kind, block, max_chars) if len(block) > max_chars
                          else [block]):
                sections[-1][1].append((kind, piece))
    passages: list[dict[str, Any]] = []
    for heading, blocks in sections:
        packed: list[tuple[set[str], str]] = []
        for kind, block in blocks:
            if packed and len(packed[-1][1]) + 2 + len(block) <= max_chars and (
                    len(packed[-1][1]) < min_chars or kind == "code" or "code" in packed[-1][0]):
                kinds, body = packed[-1]
                packed[-1] = (kinds | {kind}, f"{body}\n\n{block}")
            else:
                packed.append(({kind}, block))
        if len(packed) > 1 and len(packed[-1][1]) < min_chars and \
                len(packed[-2][1]) + 2 + len(packed[-1][1]) <= max_chars:
            (k1, b1), (k2, b2) = packed[-2], packed.pop()
            packed[-1] = (k1 | k2, f"{b1}\n\n{b2}")
        for kinds, body in packed:
            if len(body) >= min_chars:
                passages.append({"heading": heading, "kind": "code" if "code" in kinds
                                 else "prose", "text": body})
    return passages


_SCORE = re.compile(r"(?i)\bscore\b[^0-9\n-]{0,20}(-?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+))?")


def parse_score(reply: str, lo: float = 0, hi: float = 5) -> float:
    """The last "Score: N" (also "score = N/5", "**Score**: N") of a reply, within [lo, hi];
    ValueError when there is none or it is out of range."""
    found = _SCORE.findall(reply)
    if not found:
        raise ValueError("no 'Score: N' line in the reply")
    value, scale = found[-1]
    score = float(value)
    if scale and float(scale) != hi:
        raise ValueError(f"score {value}/{scale} is not on the 0-{hi:g} scale")
    if not lo <= score <= hi:
        raise ValueError(f"score {score:g} is outside [{lo:g}, {hi:g}]")
    return score


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (balanced braces), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip()
    return None


_ANSWER_LINE = re.compile(r"(?im)\banswer\b\**(?:\s*[:=]|\s+is\b:?)\**\s*(.+?)\s*$")


def extract_answer(reply: str) -> str | None:
    """The final answer of a reply: the last \\boxed{...}, else the last "Answer: ..." line,
    else the last non-empty line; None for an empty reply."""
    boxed = _boxed(reply)
    if boxed:
        return boxed
    lines = _ANSWER_LINE.findall(reply)
    if lines:
        return lines[-1].strip().rstrip(".").strip("*$ ") or None
    rest = [x.strip() for x in reply.strip().splitlines() if x.strip()]
    return rest[-1] if rest else None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation.replace(".", "").replace("-", ""))


def normalize_answer(text: str) -> str:
    """Lower case, no articles, no punctuation but '.' and '-' (numbers keep their sign and
    decimals; a final '.' goes), whitespace collapsed."""
    t = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    t = " ".join(t.split())
    return t.rstrip(".").strip()
