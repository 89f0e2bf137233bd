"""SFT data: the record schema, malformed conversations counted per reason (never fatal),
truncation rules, and loss masks that cover exactly assistant tokens + their <|im_end|> after
best-fit packing."""

import json
import re

import numpy as np
import pytest

from phi4_jax.data import chat, pipeline, sft, tokenizer
from phi4_jax.data.record_fields import RecordError
from phi4_jax.data.store import TokenStore
from phi4_jax.posttrain.demo import demo_conversations

ENC = tokenizer.phi4_encoding()


def msg(role, content):
    return {"role": role, "content": content}


GOOD = [
    [msg("user", "Hi there"), msg("assistant", "Hello! How can I help?")],
    [msg("system", "Be brief."), msg("user", "2+2?"), msg("assistant", "4"),
     msg("user", "and 3+3?"), msg("assistant", "6")],
]
LONG_ANSWER = " ".join(["word"] * 60)


def crafted_lines():
    """(line, expected outcome): 'kept', ('kept', messages after the cut) or a skip reason."""
    qa = [msg("user", "q"), msg("assistant", "a")]
    return [
        (json.dumps({"id": "g0", "messages": GOOD[0]}), "kept"),
        (json.dumps({"schema": "phi4_jax.sft/v1", "id": "g1", "source": "s",
                     "messages": GOOD[1], "meta": {}}), "kept"),
        ("{broken", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        (json.dumps({"schema": "phi4_jax.pair/v1", "messages": qa}), "bad_schema"),
        (json.dumps({"id": "m"}), "missing_messages"),
        (json.dumps({"messages": ["hello"]}), "bad_message"),
        (json.dumps({"messages": [msg("tool", "x"), *qa]}), "unknown_role"),
        (json.dumps({"messages": [{"role": "user"}, msg("assistant", "a")]}), "missing_content"),
        (json.dumps({"messages": [qa[0], msg("system", "s"), qa[1]]}), "system_not_first"),
        (json.dumps({"messages": [qa[0]]}), "no_assistant_turn"),
        (json.dumps({"id": "g0", "messages": qa}), "duplicate_id"),
        (json.dumps({"messages": [qa[0], msg("assistant", " ")]}), "empty_assistant_turn"),
        (json.dumps({"messages": [*qa, msg("user", "more?"), msg("assistant", "\n")]}),
         ("kept", qa, "empty_assistant_turn")),
        (json.dumps({"messages": [*qa, msg("user", "bye")]}), ("kept", qa, "trailing_turns")),
        (json.dumps({"messages": [*qa, msg("user", "long?"), msg("assistant", LONG_ANSWER)]}),
         ("kept", qa, "too_long")),
        (json.dumps({"messages": [qa[0], msg("assistant", LONG_ANSWER)]}), "too_long"),
    ]


@pytest.fixture
def store(tmp_path):
    lines = crafted_lines()
    path = tmp_path / "convs.jsonl"
    path.write_text("\n".join(line for line, _ in lines) + "\n\n")
    manifest, report = sft.build_store([str(path)], str(tmp_path / "sft"), max_tokens=40)
    return lines, manifest, report, tmp_path


def test_malformed_conversations_are_counted_per_reason_and_good_ones_kept(store):
    lines, manifest, report, tmp_path = store
    skips = [o for _, o in lines if isinstance(o, str) and o != "kept"]
    assert dict(report.skipped) == {reason: skips.count(reason) for reason in skips}
    assert dict(report.truncated) == {"empty_assistant_turn": 1, "trailing_turns": 1,
                                      "too_long": 1}
    kept = [o for _, o in lines if o == "kept" or isinstance(o, tuple)]
    assert report.kept == manifest.num_documents == len(kept) and report.lines == len(lines)
    # Every kept conversation is stored exactly as chat.render renders it (or its cut).
    expected = GOOD + [o[1] for o in kept if isinstance(o, tuple)]
    st = TokenStore(str(tmp_path / "sft"))
    for d, messages in enumerate(expected):
        ids, mask = chat.render(messages, encoding=ENC)
        np.testing.assert_array_equal(st.document(d), ids)
        np.testing.assert_array_equal(st.loss_mask[st.offsets[d]:st.offsets[d + 1]], mask)
    saved = json.loads((tmp_path / "sft" / "report.json").read_text())
    assert saved["skipped"] == dict(report.skipped) and saved["kept"] == report.kept
    assert saved["bad_input"]["bad_by_reason"] == dict(report.skipped)
    assert saved["bad_input"]["files"][str(path := tmp_path / "convs.jsonl")]["first"][
        "unknown_role"] == f"{path}:8: messages[0].role='tool' not in {sft.ROLES}"
    qa_tokens = len(chat.render([msg("user", "q"), msg("assistant", "a")], encoding=ENC)[0])
    assert saved["truncated_first"]["too_long"] == f"{path}:16: kept {qa_tokens} tokens"
    text = (tmp_path / "sft" / "report.txt").read_text()
    assert f"skipped: {len(kept)} records kept, {len(skips)} rejected, 1 files" in text
    assert "unknown_role" in text and "convs.jsonl:8" in text


def test_cli_prints_the_report(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in GOOD) + "[]\n")
    assert sft.main(["--input", str(path), "--output", str(tmp_path / "s"), "--max_tokens",
                     "64"]) == 0
    out = capsys.readouterr().out
    assert "kept 2 (0 truncated), skipped 1" in out and "2 conversations" in out
    assert "not_an_object" in out


def test_parse_sft_is_strict_where_the_store_is_lenient():
    ok = sft.SFTExample("s", tuple(GOOD[0]), "demo").to_json()
    assert sft.parse_sft(ok) == sft.SFTExample("s", tuple(GOOD[0]), "demo")
    for bad, field in [({k: v for k, v in ok.items() if k != "schema"}, "schema"),
                       (ok | {"messages": GOOD[0][:1]}, "messages"),
                       (ok | {"source": ""}, "source")]:
        with pytest.raises(RecordError, match=f"^{re.escape(field)}: "):
            sft.parse_sft(bad)
    assert sft.check({"messages": GOOD[0]}) == GOOD[0]  # the store needs no schema or id


def assistant_targets(tokens: np.ndarray) -> np.ndarray:
    """Independent of chat.render: 1 on tokens inside an assistant turn's body (after
    `<|im_start|>assistant<|im_sep|>`, up to and including its `<|im_end|>`)."""
    out = np.zeros(len(tokens), np.float32)
    state, role = "outside", []
    for j, t in enumerate(tokens):
        if state == "outside" and t == tokenizer.IM_START:
            state, role = "role", []
        elif state == "role":
            if t == tokenizer.IM_SEP:
                state = "assistant" if ENC.decode(role) == "assistant" else "other"
            else:
                role.append(int(t))
        elif state in ("assistant", "other"):
            out[j] = state == "assistant"
            if t == tokenizer.IM_END:
                state = "outside"
    return out


def test_loss_mask_after_packing_is_exactly_assistant_tokens(tmp_path):
    convs = demo_conversations(60, seed=1) + [
        {"messages": m} for m in GOOD]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in convs))
    _, report = sft.build_store([str(path)], str(tmp_path / "sft"), max_tokens=64)
    assert report.kept == len(convs)
    lengths = TokenStore(str(tmp_path / "sft")).doc_lengths()
    it = pipeline.build_iterator("phi4_sft", seq_len=64, global_batch_size=4, num_steps=12,
                                 data_root=str(tmp_path), process_index=0, process_count=1,
                                 provenance=True)
    seen = set()
    for batch in it:
        for r in range(4):
            seg = batch["segment_ids"][r]
            for s in np.unique(seg[seg > 0]):
                where = np.nonzero(seg == s)[0]
                tokens = batch["tokens"][r, where]
                doc = int(batch["document"][r, where[0]])
                seen.add(doc)
                # Whole conversations, isolated: positions from 0, starting at <|im_start|>.
                np.testing.assert_array_equal(batch["positions"][r, where], np.arange(len(where)))
                assert tokens[0] == tokenizer.IM_START and len(where) == lengths[doc]
                full = np.r_[tokens, batch["targets"][r, where[-1]]]
                expected = assistant_targets(full)[1:]  # mask of each position's target
                expected[-1] = 0.0  # the last token of a conversation has no target
                np.testing.assert_array_equal(batch["loss_mask"][r, where], expected)
            assert (batch["loss_mask"][r][seg == 0] == 0).all()
    assert seen == set(range(len(convs)))  # every kept conversation was trained on

