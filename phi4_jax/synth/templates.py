"""Prompt templates: data files, rendered with a record's fields.

A template is text with `${field}` placeholders (Python's `string.Template`: `$$` is a dollar
sign; braces of JSON examples need no escaping). A chat template splits into messages at lines
that are exactly `### system`, `### user` or `### assistant`:

    ### system
    You grade answers. Reply with JSON {"score": 1-10}.
    ### user
    Question: ${question}
    Answer: ${answer}

A completion template is the same text without headers, rendered as one prompt. A field the
record lacks raises `TemplateError` (the record is rejected as `missing_field`); non-string
values are inserted as canonical JSON.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from typing import Any

ROLES = ("system", "user", "assistant")
_HEADER = re.compile(r"^### (system|user|assistant)[ \t]*$", re.MULTILINE)


class TemplateError(ValueError):
    """The record cannot fill the template (a missing field)."""


def read_template(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _values(record: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
            for k, v in record.items() if isinstance(k, str)}


def fill(text: str, record: Mapping[str, Any]) -> str:
    try:
        return string.Template(text).substitute(_values(record))
    except KeyError as e:
        raise TemplateError(f"the record has no field {e.args[0]!r}") from None
    except ValueError as e:
        raise TemplateError(f"bad placeholder in template: {e}") from None


def render_prompt(text: str, record: Mapping[str, Any]) -> str:
    """A completion template filled with the record's fields."""
    return fill(text, record)


def render_messages(text: str, record: Mapping[str, Any]) -> list[dict[str, str]]:
    """A chat template as messages; text without headers is one user message."""
    parts = _HEADER.split(text)
    if len(parts) == 1:
        return [{"role": "user", "content": fill(text, record).strip("\n")}]
    if parts[0].strip():
        raise TemplateError("text before the first '### role' header")
    return [{"role": role, "content": fill(body, record).strip("\n")}
            for role, body in zip(parts[1::2], parts[2::2])]
