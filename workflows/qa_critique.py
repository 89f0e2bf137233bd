"""Answer questions, critique each answer, keep the ones the critic accepts; plus base-model
continuations sampled for each question (4 samples of a text completion).

    python -m phi4_jax.synth.run workflows/qa_critique.py --output=workdirs/qa
    python -m phi4_jax.synth.run workflows/qa_critique.py:local --output=/tmp/qa   # serve

`:local` points every model at `python -m phi4_jax.serve` on localhost:8000 (SmolLM2-135M with
`make serve`); the default is the OpenAI API with the key in OPENAI_API_KEY.
"""

from __future__ import annotations

from phi4_jax.synth import Reject


async def keep_accepted(record, ctx):
    """A validator stage: drop what the critic rejected, with its reason in the rejects file."""
    verdict = record["critique"]
    if verdict.get("correct") is not True:
        raise Reject("critic_rejected", str(verdict.get("issue", ""))[:200])
    return {"id": record["id"], "question": record["question"], "answer": record["answer"]}


def get_config(arg: str | None = None) -> dict:
    local = arg == "local"
    server = ({"base_url": "http://localhost:8000/v1", "model": "smollm2", "api_key_env": None}
              if local else {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                             "api_key_env": "OPENAI_API_KEY", "rpm": 3000})
    return {
        "name": "qa_critique",
        "inputs": ["data/questions.jsonl"],
        "shard_size": 64,
        "models": {"teacher": {**server, "concurrency": 16}},
        "stages": [
            {"name": "answer", "kind": "chat", "template": "templates/answer.txt",
             "model": "teacher", "output_field": "answer",
             "sampling": {"temperature": 0.7, "max_tokens": 256, "seed": 1}},
            {"name": "critique", "kind": "chat", "template": "templates/critique.txt",
             "model": "teacher", "output_field": "critique", "parse": "json",
             "parse_retries": 2, "sampling": {"temperature": 0.0, "max_tokens": 128}},
            {"name": "accepted", "kind": "python", "fn": "workflows.qa_critique:keep_accepted"},
            {"name": "continuations", "kind": "completions", "input": "source",
             "template": "templates/continue.txt", "model": "teacher", "n": 4,
             "output_field": "continuations",
             "sampling": {"temperature": 1.0, "max_tokens": 64, "seed": 3}},
        ],
        "exports": {"accepted": "accepted.jsonl", "continuations": "continuations.jsonl"},
    }
