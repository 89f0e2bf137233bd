"""Request contents checked against the model: prompts, chat messages, the context length.

Each failure is a 400 naming the field (`protocol.bad`): an empty prompt list, a token id
outside the vocabulary, an unknown chat role, a template that cannot render the conversation,
and a prompt plus max_tokens longer than the context (code "context_length_exceeded").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from phi4_jax.serve.protocol import bad

MAX_PROMPTS = 256  # prompts in one completions request
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user",
              "assistant": "assistant"}


def completion_prompts(prompt: Any, codec: Any, config: Any
                       ) -> tuple[list[list[int]], list[str]]:
    """(token ids, text) of each prompt: a string, strings, token ids or lists of token ids.
    Text prompts are tokenized (special tokens recognized); an empty one becomes the model's
    bos (else eos) token, as OpenAI continues from <|endoftext|>."""
    if isinstance(prompt, str):
        items: list[Any] = [prompt]
    elif prompt and all(isinstance(x, int) for x in prompt):
        items = [list(prompt)]
    else:
        items = list(prompt)
    if not items:
        raise bad("prompt: must not be an empty list", "prompt")
    if len(items) > MAX_PROMPTS:
        raise bad(f"prompt: at most {MAX_PROMPTS} prompts per request, got {len(items)}",
                  "prompt")
    start = codec.bos_id if codec.bos_id is not None else codec.eos_id
    ids, texts = [], []
    for k, item in enumerate(items):
        if isinstance(item, str):
            toks = codec.encode(item)
            text = item
        else:
            toks = list(item)
            bad_ids = [t for t in toks if not 0 <= t < config.vocab_size]
            if bad_ids:
                raise bad(f"prompt[{k}]: token id {bad_ids[0]} is outside the vocabulary "
                          f"[0, {config.vocab_size})", "prompt")
            text = "".join(codec.token_text(t) for t in toks)
        if not toks:
            if start is None:
                raise bad(f"prompt[{k}]: empty, and the model has no bos or eos token to "
                          "start from", "prompt")
            toks = [start]
        ids.append(toks)
        texts.append(text)
    return ids, texts


def chat_prompt(messages: Sequence[Any], codec: Any, *, continue_final: bool = False
                ) -> list[int]:
    """Token ids of the conversation in the model's chat template, ending where the
    assistant's reply begins; with `continue_final`, the last (assistant) message is the start
    of that reply: the conversation before it, the generation prompt, then its text."""
    if not messages:
        raise bad("messages: must not be empty", "messages")
    rendered = []
    for k, m in enumerate(messages):
        role = CHAT_ROLES.get(m.role)
        if role is None:
            raise bad(f"messages[{k}].role: {m.role!r} is not supported (system, developer, "
                      "user, assistant)", f"messages[{k}].role")
        rendered.append({"role": role, "content": m.text()})
    prefix = None
    if continue_final:
        if rendered[-1]["role"] != "assistant":
            raise bad("continue_final_message: the last message must be the assistant's",
                      "continue_final_message")
        prefix = rendered.pop()["content"]
        if not rendered:
            raise bad("messages: continue_final_message needs a message before the "
                      "assistant's", "messages")
    try:
        ids = codec.render_chat(rendered)
        return ids + codec.encode(prefix) if prefix else ids
    except ValueError as e:
        raise bad(f"messages: {e}", "messages") from None


def token_budget(prompts: Sequence[Sequence[int]], max_tokens: int, context: int) -> None:
    """400 when a prompt plus max_tokens does not fit the model's context."""
    longest = max(len(p) for p in prompts)
    if longest + max_tokens > context:
        raise bad(f"This model's maximum context length is {context} tokens. However, you "
                  f"requested {longest + max_tokens} tokens ({longest} in the prompt, "
                  f"{max_tokens} in the completion). Please reduce the prompt or max_tokens.",
                  "max_tokens", code="context_length_exceeded")
