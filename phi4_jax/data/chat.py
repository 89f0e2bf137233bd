"""ChatML with Phi-4's separator: `<|im_start|>{role}<|im_sep|>{content}<|im_end|>` per message.

`render(messages)` returns token ids and a per-token loss mask aligned with them: mask[j] == 1
means ids[j] is a training target (it is predicted from ids[:j]). It is 1 on the content of
assistant messages and on their closing `<|im_end|>` (so the model learns to stop), 0 on every
system / user token and on all `<|im_start|>role<|im_sep|>` headers. The data pipeline shifts it
onto `targets` (batch loss_mask[t] = mask of the token at t + 1).

Message text is encoded as ordinary text: a literal "<|im_end|>" inside content can never close
a turn. Malformed conversations raise `ChatFormatError` naming the message and field.

`validate` checks only what rendering needs. Whether a conversation is fit to train on (turn
order: user first, then strictly alternating; no empty assistant turn) is decided by one
validator, `phi4_jax.data.sft.check_messages` / `training_turns`, which both the SFT store
builder and `prepare --format chat` call before rendering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tiktoken

from phi4_jax.data.tokenizer import IM_END, IM_SEP, IM_START, phi4_encoding

ROLES = ("system", "user", "assistant")


class ChatFormatError(ValueError):
    """A conversation that cannot be rendered; the message says which message and field."""


def validate(messages: Any, *, require_assistant: bool = True,
             roles: Sequence[str] = ROLES) -> list[dict[str, str]]:
    """Checks a conversation and returns it as a list of {role, content} dicts."""
    if not isinstance(messages, list | tuple):
        raise ChatFormatError(f"messages must be a list, got {type(messages).__name__}")
    if not messages:
        raise ChatFormatError("empty conversation")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ChatFormatError(f"message {i}: expected an object, got {type(message).__name__}")
        for key in ("role", "content"):
            if key not in message:
                raise ChatFormatError(f"message {i}: missing {key!r}")
            if not isinstance(message[key], str):
                raise ChatFormatError(f"message {i}: {key!r} must be a string, got "
                                      f"{type(message[key]).__name__}")
        role = message["role"]
        if role not in roles:
            raise ChatFormatError(f"message {i}: unknown role {role!r} (allowed: {list(roles)})")
        if role == "system" and i != 0:
            raise ChatFormatError(f"message {i}: a system message may only come first")
        out.append({"role": role, "content": message["content"]})
    if require_assistant and not any(m["role"] == "assistant" for m in out):
        raise ChatFormatError("no assistant message: nothing to train on")
    return out


def render(messages: Any, *, encoding: tiktoken.Encoding | None = None,
           add_generation_prompt: bool = False, require_assistant: bool = True,
           roles: Sequence[str] = ROLES) -> tuple[np.ndarray, np.ndarray]:
    """Renders messages to (ids int32 [N], loss_mask uint8 [N]); see the module docstring.

    add_generation_prompt appends `<|im_start|>assistant<|im_sep|>` (mask 0) for sampling.
    """
    enc = encoding or phi4_encoding()
    checked = validate(messages, require_assistant=require_assistant and not add_generation_prompt,
                       roles=roles)
    ids: list[int] = []
    mask: list[int] = []
    for message in checked:
        header = [IM_START, *enc.encode_ordinary(message["role"]), IM_SEP]
        body = [*enc.encode_ordinary(message["content"]), IM_END]
        target = 1 if message["role"] == "assistant" else 0
        ids += header + body
        mask += [0] * len(header) + [target] * len(body)
    if add_generation_prompt:
        header = [IM_START, *enc.encode_ordinary("assistant"), IM_SEP]
        ids += header
        mask += [0] * len(header)
    return np.asarray(ids, np.int32), np.asarray(mask, np.uint8)


def render_text(messages: Any, *, add_generation_prompt: bool = False) -> str:
    """The same conversation as a string (for display and for tokenizer parity checks)."""
    checked = validate(messages, require_assistant=False)
    text = "".join(f"<|im_start|>{m['role']}<|im_sep|>{m['content']}<|im_end|>" for m in checked)
    return text + ("<|im_start|>assistant<|im_sep|>" if add_generation_prompt else "")
