"""Next-token batch iterators: the data engine's pipeline, or a synthetic stream.

The next-token objective's input contract (the data engine's; `NextToken.inputs` calls
`build_iterator`): an iterator of numpy dicts with `tokens`, `targets`, `positions`,
`segment_ids` (int32 [B, T], 0 = padding) and `loss_mask` (float32 [B, T]), where B is this
host's share of the global batch, plus `get_state()` / `set_state()` with a JSON-able state (a
Grain DatasetIterator qualifies) saved in every checkpoint. `StepIterator` is the shared part of
the iterators whose batch k is a pure function of k (this synthetic one, the DPO pairs').

`SyntheticIterator` implements the same contract without any files: packed documents of an
arithmetic-progression language (each document counts up by a stride of 1-3 modulo the vocab),
so a model can learn it from context and the loss clearly falls. Batch i depends only on
(seed, host, i): resuming is exact and free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from phi4_jax.train.config import DataConfig

BATCH_KEYS = ("tokens", "targets", "positions", "segment_ids", "loss_mask")
SOURCES = ("synthetic", "mixture")  # the data.source values of next-token objectives


class StepIterator:
    """Iterates `self.batch(0)`, `self.batch(1)`, ...: batch k is a pure function of k, so
    `self.step` (the batches already produced) is all a state needs to resume exactly."""

    step: int = 0

    def batch(self, step: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> StepIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        out = self.batch(self.step)
        self.step += 1
        return out


class SyntheticIterator(StepIterator):
    """Deterministic packed batches; state is the number of batches already produced."""

    def __init__(self, *, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0,
                 host: int = 0, min_doc_len: int = 8):
        self.batch_size, self.seq_len, self.vocab_size = batch_size, seq_len, vocab_size
        self.seed, self.host, self.min_doc_len = seed, host, min(min_doc_len, seq_len)
        self.step = 0

    def batch(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.host, index])
        b, t, v = self.batch_size, self.seq_len, self.vocab_size
        out = {k: np.zeros((b, t), np.int32) for k in BATCH_KEYS[:4]}
        out["loss_mask"] = np.zeros((b, t), np.float32)
        for row in range(b):
            start, segment = 0, 1
            # Leave some rows with trailing padding (segment 0) to exercise masking.
            fill = t if rng.random() < 0.5 else int(rng.integers(t // 2, t + 1))
            while start < fill:
                length = min(int(rng.integers(self.min_doc_len, max(t // 2, self.min_doc_len)
                                              + 1)), fill - start)
                stride = int(rng.integers(1, 4))
                doc = (int(rng.integers(0, v)) + stride * np.arange(length + 1)) % v
                span = slice(start, start + length)
                out["tokens"][row, span] = doc[:-1]
                out["targets"][row, span] = doc[1:]
                out["positions"][row, span] = np.arange(length)
                out["segment_ids"][row, span] = segment
                out["loss_mask"][row, span] = 1.0
                out["loss_mask"][row, start + length - 1] = 0.0  # no target past the document
                start, segment = start + length, segment + 1
        return out

    def get_state(self) -> dict[str, Any]:
        # "index": the key checkpoints written before StepIterator hold the step under
        return {"index": self.step, "seed": self.seed, "host": self.host}

    def set_state(self, state: dict[str, Any]) -> None:
        if (state["seed"], state["host"]) != (self.seed, self.host):
            raise ValueError(f"synthetic data state {state} belongs to another seed/host "
                             f"(this iterator: seed={self.seed}, host={self.host})")
        self.step = int(state["index"])


def build_iterator(data: DataConfig, *, global_batch: int, steps: int, vocab_size: int,
                   host: int, host_count: int, heldout_tokens: int = 0) -> Any:
    """This host's next-token iterator for a run's `data` section.

    data.source: 'synthetic' (SyntheticIterator) or 'mixture': the data engine's pipeline
    (`phi4_jax.data.pipeline.build_from_config`) over `data.mixture` ('embedded', a
    data_mixtures/ name or a file), with `steps` as the training length, so each source's epochs
    follow from the run's length (changing train.steps changes the data plan; the data engine
    refuses to resume a checkpoint written under another plan). heldout_tokens: carved out of
    each mixture source and never trained on (phi4_jax/data/heldout.py); the synthetic
    stream's held-out rows are a stream of their own (`heldout_batches`).
    """
    if data.source == "synthetic":
        return SyntheticIterator(batch_size=global_batch // host_count, seq_len=data.seq_len,
                                 vocab_size=vocab_size, seed=data.seed, host=host)
    if data.source == "mixture":
        from phi4_jax.data import pipeline, tokenizer

        if vocab_size < tokenizer.VOCAB_SIZE:
            raise ValueError(f"model.vocab_size={vocab_size} is smaller than the Phi-4 "
                             f"tokenizer's {tokenizer.VOCAB_SIZE} ids that data.source='mixture' "
                             "produces")
        return pipeline.build_from_config(data, global_batch_size=global_batch, num_steps=steps,
                                          process_index=host, process_count=host_count,
                                          vocab_size=vocab_size, heldout_tokens=heldout_tokens)
    raise ValueError(f"data.source={data.source!r}; choose one of {list(SOURCES)}")


HELDOUT_HOST = 2**31 - 1  # the synthetic held-out stream: a "host" no run has


def heldout_batches(data: DataConfig, *, rows: int, vocab_size: int
                    ) -> dict[str, dict[str, np.ndarray]]:
    """Source name -> `rows` held-out rows (global, identical on every host) of a run's data:
    each mixture source's held-out slice or store, or the synthetic stream's own."""
    if data.source == "synthetic":
        stream = SyntheticIterator(batch_size=rows, seq_len=data.seq_len, vocab_size=vocab_size,
                                   seed=data.seed, host=HELDOUT_HOST)
        return {"synthetic": stream.batch(0)}
    if data.source == "mixture":
        from phi4_jax.data.heldout import heldout_batches as of_mixture
        from phi4_jax.data.mixture import load_mixture

        mixture = load_mixture(data.mixture, cache_dir=data.cache_dir).resolve(data.data_root)
        return of_mixture(mixture, rows=rows, seq_len=data.seq_len, seed=data.seed)
    raise ValueError(f"held-out loss (eval.heldout_rows) reads next-token data; data.source="
                     f"{data.source!r} is none of {list(SOURCES)}")
