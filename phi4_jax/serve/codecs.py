"""Tokenizers behind one interface (`Codec`): text <-> ids, token strings, the chat template.

    GGUFCodec(path)    the GGUF file's BPE vocabulary and jinja chat template (SmolLM2)
    HFCodec(dir)       tokenizer.json + tokenizer_config.json (template, special tokens)
    Phi4Codec()        Phi-4's tiktoken encoding and ChatML with `<|im_sep|>` (data/chat.py)

Prompt text is encoded with special tokens recognized (as Hugging Face tokenizers and vLLM do:
"<|im_end|>" in a completion prompt is the control token); chat message content never is for
Phi-4 (`data.chat.render` encodes it as ordinary text). Generated text is decoded without
special tokens; `token_text` shows one token as text (logprobs' `tokens` and top_logprobs keys).
`stop_ids` end a row: the eos id plus the vocabulary's end-of-turn / end-of-text tokens.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|end|>", "<|eot_id|>")


class Codec(Protocol):
    """What the server needs from a tokenizer."""

    vocab_size: int
    eos_id: int | None
    bos_id: int | None
    stop_ids: tuple[int, ...]
    chat_template: str | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_text(self, token: int) -> str: ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    def special_token(self, token: int | None) -> str | None: ...


def _render_jinja(template: str, messages: Sequence[dict[str, str]], **extra: Any) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=list(messages),
                                            add_generation_prompt=True, **extra)


class _Base:
    """Shared parts: stop ids from the end tokens present, cached single-token text."""

    vocab_size: int
    eos_id: int | None
    bos_id: int | None
    chat_template: str | None

    def _id(self, token: str) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _stops(self) -> tuple[int, ...]:
        ids = [self.eos_id] + [self._id(t) for t in END_TOKENS]
        return tuple(dict.fromkeys(i for i in ids if i is not None))

    def special_token(self, token: int | None) -> str | None:
        return None if token is None else self.token_text(token)

    @functools.lru_cache(maxsize=1 << 16)  # noqa: B019 - one codec per server process
    def token_text(self, token: int) -> str:
        return self._decode_raw([token])

    def _decode_raw(self, ids: list[int]) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:  # pragma: no cover - overridden
        raise NotImplementedError

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat template rendered with a generation prompt, then encoded."""
        if self.chat_template is None:
            raise ValueError("this model has no chat template")
        return self.encode(_render_jinja(self.chat_template, messages,
                                         bos_token=self.special_token(self.bos_id) or "",
                                         eos_token=self.special_token(self.eos_id) or ""))


class GGUFCodec(_Base):
    """A GGUF file's tokenizer (`phi4_jax.convert.gguf.GGUFTokenizer`) and chat template."""

    def __init__(self, path: str):
        from phi4_jax.convert.gguf import GGUFTokenizer

        self._tok = GGUFTokenizer(path)
        self.vocab_size = self._tok.vocab_size
        self.eos_id, self.bos_id = self._tok.eos_id, self._tok.bos_id
        self.chat_template = self._tok.chat_template
        self.stop_ids = self._stops()

    def _id(self, token: str) -> int | None:
        try:
            return self._tok.token_id(token)
        except KeyError:
            return None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special=True)

    def _decode_raw(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


class HFCodec(_Base):
    """A Hugging Face directory's tokenizer.json, with tokenizer_config.json's chat template and
    special tokens (else the model config's eos / bos ids)."""

    def __init__(self, path: str, *, eos_id: int | None = None, bos_id: int | None = None):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self.vocab_size = self._tok.get_vocab_size()
        config: dict[str, Any] = {}
        config_path = os.path.join(path, "tokenizer_config.json")
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        template = config.get("chat_template")
        jinja = os.path.join(path, "chat_template.jinja")
        if template is None and os.path.exists(jinja):
            with open(jinja, encoding="utf-8") as f:
                template = f.read()
        self.chat_template = template if isinstance(template, str) else None
        def lookup(key: str, default: int | None) -> int | None:
            value = config.get(key)
            token = value.get("content") if isinstance(value, dict) else value
            found = self._id(token) if isinstance(token, str) else None
            return default if found is None else found

        self.eos_id, self.bos_id = lookup("eos_token", eos_id), lookup("bos_token", bos_id)
        self.stop_ids = self._stops()

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def _decode_raw(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)


# ChatML with Phi-4's separator, as `data.chat.render` writes it (for /tokenizer_info).
PHI4_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}<|im_sep|>{{ m['content'] }}"
                 "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant"
                 "<|im_sep|>{% endif %}")


class Phi4Codec(_Base):
    """Phi-4's tokenizer (`phi4_jax.data.tokenizer`) and chat format (`phi4_jax.data.chat`)."""

    def __init__(self) -> None:
        from phi4_jax.data import tokenizer

        self._enc = tokenizer.phi4_encoding()
        self._special = set(tokenizer.SPECIAL_TOKENS.values())
        self._names = tokenizer.SPECIAL_TOKENS
        self.vocab_size = tokenizer.VOCAB_SIZE
        self.eos_id, self.bos_id = tokenizer.EOS, tokenizer.BOS
        self.chat_template = PHI4_TEMPLATE
        self.stop_ids = self._stops()

    def _id(self, token: str) -> int | None:
        return self._names.get(token)

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special="all")

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode([i for i in ids if i not in self._special])

    def _decode_raw(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        from phi4_jax.data.chat import render

        return render(list(messages), encoding=self._enc, add_generation_prompt=True,
                      require_assistant=False)[0].tolist()
