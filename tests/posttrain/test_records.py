"""Record schemas: round trips, malformed lines counted with their location, fingerprints."""

from __future__ import annotations

import json

import pytest

from phi4_jax.posttrain.records import (
    PAIR_SCHEMA,
    JsonlWriter,
    Pair,
    Pivot,
    ReadReport,
    RecordError,
    SFTExample,
    iter_records,
    pairs_fingerprint,
    parse_pair,
    parse_sft,
    read_pairs,
    read_records,
    write_records,
)


def pair(i=0, **kw):
    fields = dict(id=f"p{i}", prompt_ids=(1, 2, 3), chosen_ids=(4,), rejected_ids=(5,),
                  source="pts", tokenizer="tok", meta={"k": i})
    return Pair(**(fields | kw))


def test_round_trip_of_every_record_kind(tmp_path):
    records = {
        "pair": [pair(0), pair(1, chosen_ids=(7, 8, 9, 10, 11), rejected_ids=(7, 8, 9, 10, 12))],
        "pivot": [Pivot("v0", "q", (1, 2), 9, 0.25, 0.75, 1, 16, "tok", {"split": "logprob"})],
        "sft": [SFTExample("s0", ({"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}), "refusal")],
    }
    for kind, recs in records.items():
        path = tmp_path / f"{kind}.jsonl"
        with JsonlWriter(path) as w:
            assert w.write(recs) == len(recs)
        back, report = read_records(path, kind)
        assert back == recs and report.records_ok == len(recs) and report.bad_total == 0


def test_malformed_lines_are_counted_with_file_line_and_field(tmp_path):
    good = pair(0).to_json()
    lines = [
        json.dumps(good),
        "{broken json",
        json.dumps(good | {"id": "p1", "chosen_ids": []}),
        json.dumps(good | {"id": "p2", "rejected_ids": [5, -1]}),
        json.dumps(good | {"id": "p3", "prompt_ids": [1, True]}),
        json.dumps(good | {"id": "p4", "rejected_ids": [4]}),
        json.dumps({k: v for k, v in good.items() if k != "tokenizer"} | {"id": "p5"}),
        json.dumps(good | {"id": "p6", "schema": "phi4_jax.pair/v0"}),
        json.dumps(good),  # duplicate id p0
        json.dumps(good | {"id": "p7", "chosen_ids": [60000]}),
        "",
        json.dumps(good | {"id": "p8", "meta": []}),
        json.dumps([1, 2]),
        json.dumps(good | {"id": "p9"}),
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    pairs, report = read_pairs(path, vocab_size=50_000)
    assert [p.id for p in pairs] == ["p0", "p9"]
    assert report.records_ok == 2 and report.bad_total == 11
    assert report.totals() == {"invalid JSON": 1, "chosen_ids": 2, "rejected_ids": 2,
                               "prompt_ids": 1, "tokenizer": 1, "schema": 1,
                               "duplicate id": 1, "meta": 1, "<line>": 1}
    first = report.files[str(path)].first  # the first location of each reason
    assert first["invalid JSON"] == f"{path}:2: invalid JSON (Expecting property name " \
                                    "enclosed in double quotes at column 2)"
    assert first["rejected_ids"] == f"{path}:4: rejected_ids: element 1 is not a token id: -1"
    assert first["chosen_ids"] == f"{path}:3: chosen_ids: must be a non-empty list of token " \
                                  "ids, got []"
    assert first["duplicate id"] == f"{path}:9: id: duplicate 'p0'"
    assert "2 records kept, 11 rejected" in report.summary()
    # the single-file view kept for older callers (`phi4_jax.posttrain.ReadReport`) agrees
    legacy = ReadReport(path)
    assert len(list(iter_records(path, "pair", legacy, vocab_size=50_000))) == 2
    assert legacy.valid == 2 and legacy.n_malformed == 11 and legacy.malformed == report.totals()
    assert f"{path}:10: chosen_ids: element 0 = 60000 is outside the vocabulary (50000)" not in \
        legacy.examples and first["rejected_ids"] in legacy.examples
    assert legacy.summary().startswith(f"{path}: 2 valid, 11 malformed (")


def test_parse_pair_errors_name_the_field():
    with pytest.raises(RecordError, match="^prompt_ids: missing$"):
        parse_pair({"schema": PAIR_SCHEMA, "id": "x"})
    with pytest.raises(RecordError, match="^id: must be a non-empty string"):
        parse_pair(pair(0).to_json() | {"id": ""})


def test_sft_and_pivot_validation(tmp_path):
    path = tmp_path / "sft.jsonl"
    ok = SFTExample("s", ({"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}), "refusal").to_json()
    path.write_text("\n".join(json.dumps(x) for x in [
        ok,
        ok | {"id": "s1", "messages": [{"role": "robot", "content": "a"}]},
        ok | {"id": "s2", "messages": [{"role": "user", "content": "q"}]},
        ok | {"id": "s3", "messages": [{"role": "assistant", "content": "  "}]},
    ]))
    recs, report = read_records(path, "sft")
    assert len(recs) == 1 and set(report.totals()) == {"messages[0].role", "messages",
                                                       "messages[0].content"}
    piv = Pivot("v", "q", (1,), 2, 0.5, 1.0, 0, 8, "tok").to_json()
    path = tmp_path / "pivots.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [
        piv, piv | {"id": "v1", "p_after": 1.5}, piv | {"id": "v2", "n_samples": 0}]))
    recs, report = read_records(path, "pivot")
    assert len(recs) == 1 and set(report.totals()) == {"p_after", "n_samples"}


def test_fingerprint_depends_on_ids_only_and_on_order():
    a, b = pair(0), pair(1, chosen_ids=(4, 4))
    assert pairs_fingerprint([a, b]) == pairs_fingerprint([pair(9), b])  # ids/meta ignored
    assert pairs_fingerprint([a, b]) != pairs_fingerprint([b, a])
    # length-prefixed: moving a token across the prompt/completion border changes it
    assert pairs_fingerprint([pair(0, prompt_ids=(1, 2), chosen_ids=(3, 4))]) != \
        pairs_fingerprint([pair(0, prompt_ids=(1, 2, 3), chosen_ids=(4,))])


def test_write_records_replaces_the_file_whole(tmp_path):
    path = tmp_path / "out" / "pairs.jsonl"
    assert write_records(path, [pair(0), pair(1)]) == 2
    assert write_records(path, [pair(2)]) == 1
    back, report = read_pairs(path)
    assert [p.id for p in back] == ["p2"] and report.bad_total == 0
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]  # no temporary left


def test_the_sft_schema_is_the_data_engines():
    from phi4_jax.data import sft

    assert SFTExample is sft.SFTExample and parse_sft is sft.parse_sft
