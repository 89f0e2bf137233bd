"""Real weights: greedy KV-cache decoding of SmolLM2-135M-Instruct equals transformers' greedy
`generate` on the same GGUF file, token for token, and its log-probs match transformers' logits.
"""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

import phi4_jax  # noqa: E402
from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path  # noqa: E402
from phi4_jax.inference.decode import generate  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.hf]

NEW = 32
CHATS = ["What is the capital of France?", "Write a haiku about the sea.",
         "List three prime numbers."]
TEXTS = ["The three primary colors are", "def fibonacci(n):\n", "Once upon a time, in a"]


@pytest.fixture(scope="module")
def path():
    try:
        return smollm2_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def prompts(path):
    tok = GGUFTokenizer(path)
    chats = [tok.render_chat([{"role": "user", "content": c}]) for c in CHATS]
    return [tok.encode(s) for s in chats + TEXTS], tok.eos_id


@pytest.fixture(scope="module")
def hf_model(path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a small shared CPU, one thread is far faster than several
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    yield model
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ours(path, prompts):
    model = phi4_jax.load_gguf(path, dtype="float32")
    ids, eos = prompts
    return generate(model, ids, max_new_tokens=NEW, stop_tokens=(eos,))  # one ragged batch


def hf_greedy(model, ids, eos):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids)),
                             max_new_tokens=NEW, do_sample=False, eos_token_id=eos,
                             pad_token_id=eos, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(ids):].tolist()
    logits = torch.stack(out.logits, 1)[0].double()
    return tokens, torch.log_softmax(logits, -1).numpy()


def test_greedy_continuations_match_transformers(prompts, hf_model, ours):
    ids, eos = prompts
    rows = ours.to_lists()
    for b, prompt in enumerate(ids):
        want, ref_logprobs = hf_greedy(hf_model, prompt, eos)
        assert rows[b] == want, f"prompt {b}: ours {rows[b]} vs transformers {want}"
        assert bool(ours.stopped[b]) == (want[-1] == eos)
        np.testing.assert_allclose(np.asarray(ours.logprobs[b, :len(want)]),
                                   ref_logprobs[np.arange(len(want)), want], atol=2e-3)


def test_shared_prefix_rollouts_equal_the_unshared_ones(path, prompts):
    """Real weights, PTS-style sampling: n rollouts from one prefill are the rollouts of the
    prefix repeated n times (same row ids), token for token and log-prob for log-prob."""
    import jax

    from phi4_jax.inference.sampling import SamplingConfig

    model = phi4_jax.load_gguf(path, dtype="float32")
    ids, eos = prompts
    prefixes = [ids[0] + ids[3], ids[1] + ids[4]]  # ~45-token prefixes
    rows = [97 * r + 5 for r in range(16)]
    kw = dict(max_new_tokens=16, sampling=SamplingConfig(temperature=1.0),
              key=jax.random.key(3), stop_tokens=(eos,), row_ids=rows)
    shared = generate(model, prefixes, n=8, **kw)
    unshared = generate(model, [p for p in prefixes for _ in range(8)], **kw)
    np.testing.assert_array_equal(shared.tokens, unshared.tokens)
    np.testing.assert_array_equal(shared.logprobs, unshared.logprobs)
    assert len({tuple(r) for r in shared.to_lists()[:8]}) == 8  # the rollouts differ
