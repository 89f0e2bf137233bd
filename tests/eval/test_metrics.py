"""Each metric of the harness against a case computed by hand, and the task readers.

    python -m pytest -q tests/eval/test_metrics.py
"""

from __future__ import annotations

import math
import os

import pytest

from phi4_jax.cli import UsageError
from phi4_jax.eval import metrics as m
from phi4_jax.eval.graders import RuleGrader
from phi4_jax.eval.requests import encode_pair, rolling_pairs
from phi4_jax.eval.tasks import load_bigbench, load_mc, load_task

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("n,c,k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (20, 7, 10), (5, 5, 3),
                                   (200, 13, 100), (4, 1, 4)])
def test_pass_at_k_is_the_closed_form(n, c, k):
    assert m.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k),
                                                 rel=1e-12, abs=1e-15)


def test_pass_at_k_by_hand_and_bad_input():
    assert m.pass_at_k(4, 1, 1) == 0.25  # one of four: 1 - C(3,1)/C(4,1) = 1/4
    assert m.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    with pytest.raises(ValueError, match="at least 5 samples"):
        m.pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        m.pass_at_k(4, 5, 1)


def test_acc_norm_differs_from_acc_where_length_decides():
    # summed: -4.0 ("no") beats -6.0 ("absolutely"): acc picks 0. Per character: -4/2 = -2.0
    # against -6/10 = -0.6: acc_norm picks 1, the gold one.
    got = m.choice_metrics([-4.0, -6.0], ["no", "absolutely"], 1)
    assert got == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    # characters vs bytes: "ééé" is 3 characters but 6 bytes.
    got = m.choice_metrics([-3.3, -2.0], ["ééé", "ab"], 0)
    # per char: -1.1 vs -1.0 -> 1; per byte: -0.55 vs -1.0 -> 0; summed: -3.3 vs -2.0 -> 1
    assert got == {"acc": 0.0, "acc_norm": 0.0, "acc_bytes": 1.0}
    assert m.choice_metrics([-1.0, -1.0, -5.0], ["a", "b", "c"], [0, 1])["acc"] == 1.0


def test_mean_and_standard_error():
    mean, err = m.mean_stderr([1, 0, 1, 1])
    assert mean == 0.75
    # sample std: sqrt(((.25^2) * 3 + .75^2) / 3) = sqrt(0.25) = 0.5; / sqrt(4) = 0.25
    assert err == pytest.approx(0.25)
    assert m.mean_stderr([1.0]) == (1.0, None)


def test_simpleqa_buckets():
    grades = ["correct"] * 3 + ["incorrect"] * 2 + ["not_attempted"] * 5
    s = m.simpleqa_summary(grades)
    assert s["correct"][0] == 0.3 and s["incorrect"][0] == 0.2 and s["not_attempted"][0] == 0.5
    assert s["accuracy_given_attempted"][0] == pytest.approx(3 / 5)
    assert s["f1"][0] == pytest.approx(2 * 0.6 * 0.3 / (0.6 + 0.3))  # 0.4
    assert s["f1"][0] == pytest.approx(0.4)
    assert m.simpleqa_summary(["not_attempted"])["f1"][0] == 0.0
    with pytest.raises(ValueError, match="unknown grades"):
        m.simpleqa_summary(["right"])


def test_rule_grader_shares_the_refusal_workflows_decision():
    items = [("Capital of France?", "Paris", [], "It is Paris."),
             ("Capital of France?", "Paris", [], "I don't know."),
             ("Capital of France?", "Paris", [], "Lyon"),
             ("Largest planet?", "Jupiter", ["planet Jupiter"], "the planet jupiter!")]
    assert RuleGrader().grade(items) == ["correct", "not_attempted", "incorrect", "correct"]


def test_perplexity_and_bits_per_byte():
    s = m.perplexity_summary([-10.0, -20.0], tokens=[5, 10], nbytes=[20, 40], words=[3, 7])
    assert s["token_perplexity"][0] == pytest.approx(math.exp(30 / 15))
    assert s["word_perplexity"][0] == pytest.approx(math.exp(30 / 10))
    assert s["byte_perplexity"][0] == pytest.approx(math.exp(30 / 60))
    assert s["bits_per_byte"][0] == pytest.approx(30 / 60 / math.log(2))


class WordLM:
    """A tokenizer that makes one token per word, its leading space included."""

    prefix_id, max_length = 0, 4

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text, bos=None):
        import re

        return [self.vocab.setdefault(w, len(self.vocab) + 1) for w in re.findall(r"\s*\S+|\s+$",
                                                                                   text)]


def test_encode_pair_moves_trailing_space_and_splits_the_whole():
    lm = WordLM()
    ctx, cont = encode_pair(lm, "Answer: ", "Paris")  # -> "Answer:" + " Paris"
    assert ctx == lm.encode("Answer:") and cont == lm.encode(" Paris")
    assert encode_pair(lm, "", " x") == ([0], lm.encode(" x"))  # empty context: prefix token


def test_rolling_windows_score_every_token_once():
    tokens = list(range(1, 11))
    pairs = rolling_pairs(tokens, 4, prefix_id=0)
    assert [k for _, k in pairs] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert pairs[0][0] == [0] and pairs[1][0] == [4] and pairs[2][0] == [6, 7, 8]
    assert all(len(c) + len(k) <= 5 for c, k in pairs)  # at most max_length inputs


def test_task_readers(tmp_path):
    task = load_bigbench(os.path.join(FIXTURES, "bigbench_colors"))
    assert task.name == "bigbench_colors" and len(task.docs) == 5  # the generative one skipped
    first = task.docs[0]
    assert first["context"] == ("Answer with the color.\nQ: What color is grass?\n  choice: green"
                                "\n  choice: purple\n  choice: orange\nA:")
    assert first["gold"] == [0] and task.docs[4]["gold"] == [0, 1]
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "2+2?", "choices": ["3", "4"], "answer": "4"}\n\n'
                    '{"question": "1+1?", "choices": ["2", "5"], "answer": 0, "id": "x"}\n')
    mc = load_mc(str(path))
    assert [d["gold"] for d in mc.docs] == [[1], [0]] and mc.docs[1]["id"] == "x"
    assert mc.docs[0]["context"] == "Question: 2+2?\nAnswer:"
    assert load_mc(str(path)).fingerprint == mc.fingerprint
    path.write_text('{"question": "2+2?", "choices": ["3", "4"], "answer": 7}\n')
    with pytest.raises(UsageError, match="record 1"):
        load_mc(str(path))
    with pytest.raises(UsageError, match="unknown task"):
        load_task("mmlu")
    assert len(load_task("humaneval").docs) == 164
    assert len(load_task("champ").docs) == 270
