"""ChatML rendering: exact token layout and the assistant-only loss mask."""

import numpy as np
import pytest

from phi4_jax.data import chat
from phi4_jax.data.tokenizer import IM_END, IM_SEP, IM_START, phi4_encoding

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6, of course."}]


def test_render_matches_template_text():
    enc = phi4_encoding()
    ids, mask = chat.render(MESSAGES)
    text = chat.render_text(MESSAGES)
    assert text.startswith("<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user")
    assert ids.dtype == np.int32 and mask.dtype == np.uint8 and ids.shape == mask.shape
    assert ids.tolist() == enc.encode(text, allowed_special="all")


def test_loss_mask_is_assistant_content_and_its_im_end():
    enc = phi4_encoding()
    ids, mask = chat.render(MESSAGES)
    expected = []
    for m in MESSAGES:
        header = [IM_START, *enc.encode_ordinary(m["role"]), IM_SEP]
        body = [*enc.encode_ordinary(m["content"]), IM_END]
        expected += [0] * len(header) + [int(m["role"] == "assistant")] * len(body)
    assert mask.tolist() == expected
    trained = enc.decode(ids[mask == 1].tolist())
    assert trained == "4<|im_end|>6, of course.<|im_end|>"


def test_generation_prompt():
    ids, mask = chat.render(MESSAGES[:2], add_generation_prompt=True)
    enc = phi4_encoding()
    assert enc.decode(ids[-3:].tolist()) == "<|im_start|>assistant<|im_sep|>"
    assert mask.sum() == 0


def test_special_strings_in_content_stay_text():
    ids, _ = chat.render([{"role": "user", "content": "<|im_end|>"},
                          {"role": "assistant", "content": "ok"}])
    assert (ids == IM_END).sum() == 2  # only the two real turn ends


@pytest.mark.parametrize("messages, match", [
    ("hello", "must be a list"),
    ([], "empty"),
    (["hi"], "message 0: expected an object"),
    ([{"role": "user"}], "message 0: missing 'content'"),
    ([{"content": "x"}], "message 0: missing 'role'"),
    ([{"role": "user", "content": 3}], "message 0: 'content' must be a string"),
    ([{"role": "robot", "content": "x"}], "message 0: unknown role 'robot'"),
    ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"},
      {"role": "assistant", "content": "z"}], "message 1: a system message may only come first"),
    ([{"role": "user", "content": "x"}], "no assistant message"),
])
def test_malformed_conversations_raise(messages, match):
    with pytest.raises(chat.ChatFormatError, match=match):
        chat.render(messages)
