"""Typed field checks for JSONL records; each raises `RecordError` naming the offending key.

The record schemas of SFT conversations (`phi4_jax.data.sft`) and of the DPO pairs and pivotal
tokens of post-training validate with these, so every schema words a problem the same way,
`field: problem`, and a reader can count bad records by `RecordError.field`.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class RecordError(ValueError):
    """A record that does not fit its schema; `field` names the offending key."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def require_object(obj: Any) -> dict[str, Any]:
    """`obj` if it is a JSON object; a line holding anything else is field '<line>'."""
    if not isinstance(obj, dict):
        raise RecordError("<line>", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def get(obj: dict[str, Any], field: str, default: Any = dataclasses.MISSING) -> Any:
    """`obj[field]`, else `default`; without a default a missing field is an error."""
    if field not in obj:
        if default is dataclasses.MISSING:
            raise RecordError(field, "missing")
        return default
    return obj[field]


def string(obj: dict[str, Any], field: str) -> str:
    value = get(obj, field)
    if not isinstance(value, str) or not value:
        raise RecordError(field, f"must be a non-empty string, got {value!r:.60}")
    return value


def integer(obj: dict[str, Any], field: str, minimum: int = 0) -> int:
    value = get(obj, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecordError(field, f"must be an integer >= {minimum}, got {value!r:.60}")
    return value


def probability(obj: dict[str, Any], field: str) -> float:
    value = get(obj, field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise RecordError(field, f"must be a probability in [0, 1], got {value!r:.60}")
    return float(value)


def token_ids(obj: dict[str, Any], field: str, vocab_size: int | None) -> tuple[int, ...]:
    """A non-empty list of token ids in [0, vocab_size) (no upper bound when None)."""
    value = get(obj, field)
    if not isinstance(value, list) or not value:
        raise RecordError(field, f"must be a non-empty list of token ids, got {value!r:.60}")
    for j, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise RecordError(field, f"element {j} is not a token id: {t!r:.30}")
        if vocab_size is not None and t >= vocab_size:
            raise RecordError(field, f"element {j} = {t} is outside the vocabulary "
                                     f"({vocab_size})")
    return tuple(value)


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The optional free-form `meta` object (default {})."""
    value = get(obj, "meta", {})
    if not isinstance(value, dict):
        raise RecordError("meta", f"must be an object, got {type(value).__name__}")
    return value


def schema(obj: dict[str, Any], expected: str) -> None:
    found = get(obj, "schema")
    if found != expected:
        raise RecordError("schema", f"expected {expected!r}, got {found!r:.60}")
