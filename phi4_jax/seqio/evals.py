"""Evaluation tasks (phi4_jax.eval.tasks) as seqio Tasks whose metric_fns call our metrics.

    from phi4_jax.seqio import register_eval_task
    task = register_eval_task("mc:questions.jsonl")    # seqio Task "phi4_eval.questions"
    seqio.Evaluator("phi4_eval.questions", feature_converter, eval_split="validation")

Examples are tokenized here with the Phi-4 tokenizer (or `codec`: anything with encode(text),
decode(ids) and prefix_id, as phi4_jax.eval.lm's models), exactly as our harness builds its
requests (phi4_jax.eval.requests.encode_pair), and carried as int32 ids with a
PassThroughVocabulary; the texts ride along as "*_pretokenized" and the fields the metrics need.

  mc / bigbench  one example per (question, choice): "inputs" the (few-shot) context,
                 "targets" " " + choice; metric_fn (targets, scores): `scores` are the summed
                 log-likelihoods of the targets; the examples of one question are grouped and
                 scored by metrics.choice_metrics -> acc, acc_norm, acc_bytes (means over
                 questions) and their *_stderr
  ppl            one example per document, "targets" its tokens; metric_fn (targets, scores):
                 metrics.perplexity_summary -> token / word / byte perplexity, bits_per_byte
  simpleqa       "inputs" the "Question: ...\\nAnswer:" prompt, "targets" the answer; metric_fn
                 (targets, predictions): predictions are token ids ending at a special token
                 (<|im_end|>, then any padding); the first line of their text is graded by
                 the rule grader (graders.RuleGrader) -> metrics.simpleqa_summary
  humaneval and champ (sandboxed execution, math-verify workers) are not registered: run them
  with python -m phi4_jax.eval.

The Task has one split ("validation" unless told), so seqio.Evaluator's default finds it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from phi4_jax.data.tokenizer import ENDOFTEXT, NUM_BPE_RANKS, VOCAB_SIZE, phi4_encoding
from phi4_jax.eval import metrics as m
from phi4_jax.eval.requests import encode_pair
from phi4_jax.eval.runners import QA_PROMPT, fewshot_context
from phi4_jax.eval.tasks import Task, load_task
from phi4_jax.seqio._deps import add_task, require, token_feature
from phi4_jax.seqio.mixtures import seqio_name

KINDS = ("mc", "ppl", "simpleqa")


class Phi4Codec:
    """The Phi-4 tokenizer with the interface encode_pair uses: ordinary text, no BOS;
    <|endoftext|> conditions an empty context."""

    prefix_id = ENDOFTEXT

    def __init__(self):
        self._encoding = phi4_encoding()

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._encoding.decode([int(i) for i in ids if int(i) < NUM_BPE_RANKS])


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _summary(figures: dict[str, tuple[float, float | None]]) -> dict[str, float]:
    out = {}
    for key, (value, err) in figures.items():
        out[key] = float(value)
        if err is not None:
            out[f"{key}_stderr"] = float(err)
    return out


# -- multiple choice ---------------------------------------------------------------------------
def _mc_examples(task: Task, codec: Any, num_fewshot: int, seed: int) -> list[dict[str, Any]]:
    out = []
    for i, d in enumerate(task.docs):
        context = fewshot_context(task.docs, i, num_fewshot, seed)
        for j, choice in enumerate(d["choices"]):
            ctx, cont = encode_pair(codec, context, f" {choice}")
            out.append({"inputs": ctx, "targets": cont, "inputs_pretokenized": context,
                        "targets_pretokenized": f" {choice}", "doc_id": str(d["id"]),
                        "choice": choice, "is_gold": int(j in d["gold"])})
    return out


def mc_postprocess(output: Any, example: dict[str, Any] | None = None,
                   is_target: bool = False) -> Any:
    """A target becomes {"doc", "choice", "gold"}; scores pass through."""
    if not is_target or example is None:
        return output
    return {"doc": _text(example["doc_id"]), "choice": _text(example["choice"]),
            "gold": bool(example["is_gold"])}


def mc_metrics(targets: Sequence[dict[str, Any]], scores: Sequence[float]) -> dict[str, float]:
    """acc / acc_norm / acc_bytes over questions (choice_metrics per question, then the mean
    and its standard error); one (target, score) per choice, a question's choices in order."""
    questions: dict[str, list[tuple[str, float, bool]]] = {}
    for t, score in zip(targets, scores, strict=True):
        questions.setdefault(t["doc"], []).append((t["choice"], float(np.sum(score)), t["gold"]))
    per_question = [m.choice_metrics([s for _, s, _ in q], [c for c, _, _ in q],
                                     [k for k, (_, _, gold) in enumerate(q) if gold])
                    for q in questions.values()]
    return _summary({key: m.mean_stderr([p[key] for p in per_question])
                     for key in ("acc", "acc_norm", "acc_bytes")})


# -- perplexity --------------------------------------------------------------------------------
def _ppl_examples(task: Task, codec: Any) -> list[dict[str, Any]]:
    out = []
    for d in task.docs:
        tokens = list(d["tokens"]) if "tokens" in d else codec.encode(d["text"])
        text = codec.decode(tokens) if "tokens" in d else d["text"]
        out.append({"targets": tokens, "targets_pretokenized": text, "doc_id": str(d["id"])})
    return out


def ppl_postprocess(output: Any, example: dict[str, Any] | None = None,
                    is_target: bool = False) -> Any:
    """A target becomes the document's sizes {"tokens", "bytes", "words"} (lm-eval's words:
    pieces between runs of whitespace); scores pass through."""
    if not is_target or example is None:
        return output
    text = _text(example["targets_pretokenized"])
    return {"tokens": int(len(example["targets"])), "bytes": len(text.encode("utf-8")),
            "words": len(re.split(r"\s+", text))}


def ppl_metrics(targets: Sequence[dict[str, int]], scores: Sequence[float]) -> dict[str, float]:
    """Corpus perplexities from per-document summed log-likelihoods (nats) of all its tokens."""
    return _summary(m.perplexity_summary([float(np.sum(s)) for s in scores],
                                         [t["tokens"] for t in targets],
                                         [t["bytes"] for t in targets],
                                         [t["words"] for t in targets]))


# -- SimpleQA ----------------------------------------------------------------------------------
def _simpleqa_examples(task: Task, codec: Any) -> list[dict[str, Any]]:
    out = []
    for d in task.docs:
        prompt = QA_PROMPT.format(question=d["question"])
        out.append({"inputs": codec.encode(prompt), "targets": codec.encode(f" {d['answer']}"),
                    "inputs_pretokenized": prompt, "targets_pretokenized": d["answer"],
                    "question": d["question"], "aliases": list(d["aliases"]),
                    "doc_id": str(d["id"])})
    return out


def _simpleqa_postprocess(codec: Any):
    def postprocess(output: Any, example: dict[str, Any] | None = None,
                    is_target: bool = False) -> Any:
        """A target becomes {"question", "answer", "aliases"}; a prediction (ids, or text
        from a text vocabulary) its first line, stripped, as our runner's stop at "\\n".
        Ids end at the first special token (<|im_end|>, <|endoftext|>): padding goes after."""
        if is_target:
            return {"question": _text(example["question"]), "answer": _text(output),
                    "aliases": [_text(a) for a in example["aliases"]]}
        if not isinstance(output, str | bytes):
            ids = [int(i) for i in output]
            ends = [k for k, i in enumerate(ids) if i >= NUM_BPE_RANKS]
            output = codec.decode(ids[:ends[0]] if ends else ids)
        return _text(output).split("\n")[0].strip()

    return postprocess


def simpleqa_metrics(targets: Sequence[dict[str, Any]], predictions: Sequence[str]
                     ) -> dict[str, float]:
    """The rule grader's buckets -> correct / not_attempted / incorrect shares (with standard
    errors), accuracy_given_attempted and f1."""
    from phi4_jax.eval.graders import RuleGrader  # noqa: PLC0415 (posttrain's grader)

    grades = RuleGrader().grade([(t["question"], t["answer"], t["aliases"], p)
                                 for t, p in zip(targets, predictions, strict=True)])
    return _summary(m.simpleqa_summary(grades))


# -- registration ------------------------------------------------------------------------------
def _signature(tf: Any, example: dict[str, Any]) -> dict[str, Any]:
    spec = {}
    for key, value in example.items():
        if key in ("inputs", "targets"):
            spec[key] = tf.TensorSpec([None], tf.int32)
        elif isinstance(value, list):
            spec[key] = tf.TensorSpec([None], tf.string)
        elif isinstance(value, int):
            spec[key] = tf.TensorSpec([], tf.int32)
        else:
            spec[key] = tf.TensorSpec([], tf.string)
    return spec


def register_eval_task(task: str | Task, *, name: str | None = None, split: str = "validation",
                       num_fewshot: int = 0, seed: int = 1234, codec: Any = None,
                       vocab_size: int = VOCAB_SIZE) -> Any:
    """Registers (or replaces) a seqio Task for one evaluation task: a `--tasks` spec
    ("mc:PATH", "bigbench:PATH", "ppl:PATH", "simpleqa:PATH") or a loaded eval Task.
    name: default "phi4_eval.<task name>". num_fewshot / seed: mc few-shot contexts, drawn as
    our harness draws them. Returns the seqio Task."""
    _, tf = require()
    task = load_task(task) if isinstance(task, str) else task
    codec = codec or Phi4Codec()
    if task.kind == "mc":
        examples, postprocess, metric = (_mc_examples(task, codec, num_fewshot, seed),
                                         mc_postprocess, mc_metrics)
    elif task.kind == "ppl":
        examples, postprocess, metric = _ppl_examples(task, codec), ppl_postprocess, ppl_metrics
    elif task.kind == "simpleqa":
        examples, postprocess, metric = (_simpleqa_examples(task, codec),
                                         _simpleqa_postprocess(codec), simpleqa_metrics)
    else:
        raise ValueError(f"{task.name}: task kind {task.kind!r} has no seqio registration "
                         f"(registered kinds: {', '.join(KINDS)}; bigbench is mc); run it with "
                         "python -m phi4_jax.eval")
    if not examples:
        raise ValueError(f"{task.name}: no examples")
    signature = _signature(tf, examples[0])

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        del split, shuffle_files, seed  # one fixed list of examples

        def generate():
            for ex in examples:
                yield {k: np.asarray(v, np.int32) if k in ("inputs", "targets") else v
                       for k, v in ex.items()}

        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    seqio, _ = require()
    features = {k: token_feature(vocab_size) for k in ("inputs", "targets") if k in signature}
    source = seqio.FunctionDataSource(dataset_fn, splits=[split],
                                      num_input_examples={split: len(examples)})
    return add_task(name or seqio_name("phi4_eval", task.name), source=source,
                    output_features=features, preprocessors=[], postprocess_fn=postprocess,
                    metric_fns=[metric], shuffle_buffer_size=None)
