"""Text -> token requests, as lm-eval-harness builds them (its semantics, our code).

    encode_pair(lm, "Question: ...\\nAnswer:", " Paris")   # (context ids, continuation ids)
    rolling_pairs(tokens, max_length, prefix_id)            # perplexity windows

`encode_pair`: trailing whitespace of the context moves to the front of the continuation; the
context and context + continuation are encoded separately and the continuation is what the
whole has beyond the context's length (so a token spanning the boundary belongs to the
continuation's count as lm-eval counts it). An empty context is the prefix token (BOS, else EOS)
unless the continuation already starts with it.

`rolling_pairs`: a document is scored in windows predicting at most max_length tokens each; the
first window is conditioned on the prefix token, every later one on as many of the preceding
tokens as fit in max_length inputs (lm-eval's rolling windows with context length 1, the last
window filled up with context).
"""

from __future__ import annotations

from typing import Any

Pair = tuple[list[int], list[int]]


def encode_pair(lm: Any, context: str, continuation: str) -> Pair:
    if not context:
        cont = lm.encode(continuation)
        if lm.prefix_id is None or (cont and cont[0] == lm.prefix_id):
            return cont[:1], cont[1:]
        return [lm.prefix_id], cont
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, ctx = lm.encode(context + continuation), lm.encode(context)
    return ctx, whole[len(ctx):]


def rolling_pairs(tokens: list[int], max_length: int, prefix_id: int | None) -> list[Pair]:
    """(context, continuation) windows covering every token of the document once (the first
    token too when there is a prefix token; without one it only conditions)."""
    if prefix_id is None:
        head, tokens = tokens[:1], tokens[1:]
    else:
        head = [prefix_id]
    out, start = [], 0
    while start < len(tokens):
        end = min(start + max_length, len(tokens))
        before = head + tokens[:start]
        room = max_length + 1 - (end - start)
        out.append((before[-room:], tokens[start:end]))
        start = end
    return out
