"""The server through the `openai` client (sync, async, streaming) on 127.0.0.1, SmolLM2-135M.

References are in-process: `generate` (same seed -> the same samples; greedy -> the same text)
and `prompt_logprobs` for echoed prompts. Prompts stay short and max_tokens <= 16 so a few
shape buckets cover the module.
"""

from __future__ import annotations

import asyncio

import jax
import numpy as np
import pytest

from phi4_jax.inference.decode import generate
from phi4_jax.inference.sampling import SamplingConfig
from phi4_jax.inference.scoring import prompt_logprobs
from tests.serve.conftest import serve

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def url(smollm2):
    with serve(smollm2, max_batch=8) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600, max_retries=0)


def _reference(served, ids, n, max_tokens, sampling, seed):
    out = generate(served.model, [ids], n=n, max_new_tokens=max_tokens, sampling=sampling,
                   key=jax.random.key(seed), stop_tokens=served.codec.stop_ids)
    texts = []
    for row in out.to_lists():
        row = row[:-1] if row and row[-1] in served.codec.stop_ids else row
        texts.append(served.codec.decode(row))
    return texts, out


def test_models_and_health(client, url):
    import httpx

    assert [m.id for m in client.models.list().data] == ["smollm2"]
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["accepting"]


def test_greedy_completion_matches_generate_for_text_and_token_prompts(client, smollm2):
    ids = smollm2.codec.encode(PROMPT)
    want, _ = _reference(smollm2, ids, 1, 12, SamplingConfig(0.0), 0)
    by_text = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=12,
                                        temperature=0)
    assert by_text.choices[0].text == want[0]
    assert by_text.usage.prompt_tokens == len(ids) and by_text.usage.completion_tokens == 12
    by_ids = client.completions.create(model="smollm2", prompt=[ids, ids[:3]], max_tokens=12,
                                       temperature=0)
    assert [c.index for c in by_ids.choices] == [0, 1]
    assert by_ids.choices[0].text == want[0]
    assert by_ids.choices[0].finish_reason == "length"


def test_seeded_samples_equal_generate_whatever_shares_the_batch(client, url, smollm2):
    ids = smollm2.codec.encode(PROMPT)
    want, _ = _reference(smollm2, ids, 2, 16, SamplingConfig(1.0), 7)
    body = dict(model="smollm2", prompt=PROMPT, max_tokens=16, temperature=1.0, n=2, seed=7)
    alone = client.completions.create(**body)
    assert [c.text for c in alone.choices] == want

    async def crowd():
        aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600,
                                     max_retries=0)
        others = [dict(body, prompt=p, seed=s) for p, s in
                  (("Write a poem", 1), ("def f(x):", 2), ("Once upon", 3))]
        results = await asyncio.gather(*(aclient.completions.create(**b)
                                         for b in [others[0], body, *others[1:]]))
        await aclient.close()
        return results

    batched = asyncio.run(crowd())
    assert [c.text for c in batched[1].choices] == want
    assert len({c.text for r in batched for c in r.choices}) > 4  # they really differ


def test_stop_strings_cut_the_text(client):
    out = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=16,
                                    temperature=0, stop=[","])
    assert "," not in out.choices[0].text and out.choices[0].finish_reason == "stop"


def test_logprobs_of_generated_and_echoed_tokens(client, smollm2):
    ids = smollm2.codec.encode(PROMPT)
    _, ref = _reference(smollm2, ids, 1, 8, SamplingConfig(0.0), 0)
    out = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=8,
                                    temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    np.testing.assert_allclose(lp.token_logprobs, np.asarray(ref.logprobs[0]), atol=1e-4)
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs)
    for tok_lp, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert max(top.values()) == pytest.approx(tok_lp, abs=1e-6)  # greedy: the best one
    echo = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=0, echo=True,
                                     logprobs=1)
    got = echo.choices[0].logprobs
    assert echo.choices[0].text == PROMPT and got.token_logprobs[0] is None
    assert len(got.tokens) == len(ids) and "".join(got.tokens) == PROMPT
    want = prompt_logprobs(smollm2.model, [ids]).logprobs[0, 1:len(ids)]
    np.testing.assert_allclose(got.token_logprobs[1:], want, atol=1e-5)


def test_chat_streaming_sync_and_async_equal_the_whole_answer(client, url):
    messages = [{"role": "user", "content": "Name a fruit."}]
    whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16,
                                           temperature=0)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant" and text
    stream = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.choices[0].finish_reason and reasons.count(None) == \
        len(reasons) - 1
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    async def astream():
        aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600,
                                     max_retries=0)
        pieces = []
        async for chunk in await aclient.chat.completions.create(
                model="smollm2", messages=messages, max_tokens=16, temperature=0,
                stream=True):
            pieces.append(chunk.choices[0].delta.content or "")
        await aclient.close()
        return "".join(pieces)

    assert asyncio.run(astream()) == text


def test_completion_streaming_equals_the_whole_text(client):
    whole = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=12,
                                      temperature=0)
    pieces = list(client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=12,
                                            temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "length"


def test_continue_final_message_continues_the_assistant_prefix(client, smollm2):
    """vLLM's `continue_final_message`: the reply continues the last (assistant) message, whose
    text is not repeated; the model sees the conversation, the generation prompt, the prefix."""
    question = [{"role": "user", "content": "Name a color."}]
    prefix = '{"color": "'
    ids = smollm2.codec.render_chat(question) + smollm2.codec.encode(prefix)
    want, _ = _reference(smollm2, ids, 1, 6, SamplingConfig(0.0), 0)
    got = client.chat.completions.create(
        model="smollm2", messages=[*question, {"role": "assistant", "content": prefix}],
        max_tokens=6, temperature=0,
        extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert got.choices[0].message.content == want[0]
    assert got.usage.prompt_tokens == len(ids)
