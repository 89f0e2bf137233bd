"""The per-host, checkpointable batch iterator of a mixture (built on Grain).

    it = build_iterator(mixture, seq_len=4096, global_batch_size=5760, num_steps=N, seed=0)
    batch = next(it)   # dict of numpy arrays [global_batch_size // process_count, seq_len]

Global step s is made of global rows [s * B, (s + 1) * B); process h of H builds only rows
[s * B + h * B / H, s * B + (h + 1) * B / H), so concatenating the hosts' batches in process
order gives the same global batch for any H. Each row comes from one source (schedule), and its
content from that source's row layout (row_layout) read from its store (packing): memory-mapped
files or a zarr3 store on any tensorstore kvstore (local, gs://), opened by path or URL with
`store.open_store`; a zarr3 store is read on demand, only the spans of this host's rows, and
Grain's prefetch (`prefetch` batches, `num_threads` workers) is the read-ahead that overlaps those
reads with training.

The iterator is a `grain.DatasetIterator` over `grain.MapDataset.range(num_steps).map(...)`
with Grain's thread prefetch. Its state (`get_state()`) is JSON: {"version", "step", "grain",
"plan_digest", "plan", "sources"}, the same on every host: a global step, no host index. So a
run may resume with a different number of hosts (the training checkpoint,
phi4_jax/train/checkpoint.py, accepts that when every host saved the same state; the global
batch must divide over the new host count). `set_state` checks the plan and every store's
content fingerprint, then verifies the offsets and RESUME_SAMPLE_CHUNKS chunks of every store
against the checksums in its manifest (a store rewritten in place, manifest untouched; see
phi4_jax/data/store.py), and names the source that changed. Grain's own
`grain.checkpoint.CheckpointSave(it)` handler also works. With `vocab_size=` (the model's),
opening a store whose largest token id is outside the vocabulary fails, naming the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from phi4_jax.data.heldout import carve, train_docs
from phi4_jax.data.mixture import Mixture, load_mixture
from phi4_jax.data.packing import empty_batch, fill_rows
from phi4_jax.data.plan import Plan, row_plan
from phi4_jax.data.row_layout import make_layout
from phi4_jax.data.store import StoreError, StoreReader, open_store, read_manifest

STATE_VERSION = 1
RESUME_SAMPLE_CHUNKS = 8  # chunks per store checked at restore (16 MiB of tokens each)
log = logging.getLogger(__name__)


class DataStateError(ValueError):
    """A saved iterator state does not match this pipeline (changed data or plan)."""


class MixtureData:
    """Stores, layouts, plan and schedule of a mixture: random access to any global row."""

    def __init__(self, mixture: Mixture, *, seq_len: int, global_batch_size: int,
                 num_steps: int | None = None, seed: int = 0, data_root: str | None = None,
                 best_fit_window: int = 2048, vocab_size: int | None = None,
                 heldout_tokens: int = 0):
        self.mixture = load_mixture(mixture).resolve(data_root)
        self.heldout_tokens = heldout_tokens  # carved per source without a held-out store
        self.seq_len, self.global_batch_size, self.seed = seq_len, global_batch_size, seed
        self.best_fit_window = best_fit_window
        self.stores: list[StoreReader] = []
        self.layouts = []
        for s in self.mixture.sources:
            store = open_store(s.path, vocab_size=vocab_size)
            if s.unique_tokens and abs(store.num_tokens / s.unique_tokens - 1) > 0.01:
                log.warning("source %r: store %s has %d tokens, the mixture declares %.4g; "
                            "planning with the store's count", s.name, s.path,
                            store.num_tokens, s.unique_tokens)
            self.stores.append(store)
            docs = None
            if heldout_tokens and not s.heldout:
                docs = train_docs(len(store.doc_lengths()),
                                  carve(store.doc_lengths(), s.name, heldout_tokens))
            self.layouts.append(make_layout(store, s.packing, seq_len, seed, s.name,
                                            best_fit_window, docs=docs))
        unique = {s.name: lay.unique_tokens for s, lay in zip(self.mixture.sources,
                                                              self.layouts)}
        fills = {s.name: lay.fill() for s, lay in zip(self.mixture.sources, self.layouts)}
        self.plan, self.schedule = row_plan(self.mixture, seq_len=seq_len,
                                            global_batch_size=global_batch_size,
                                            num_steps=num_steps, unique_tokens=unique,
                                            fills=fills)
        self.num_steps = self.plan.num_steps

    @property
    def fingerprints(self) -> dict[str, str]:
        return {s.name: st.fingerprint for s, st in zip(self.mixture.sources, self.stores)}

    def plan_summary(self) -> dict[str, Any]:
        """What the batch stream depends on besides the store contents (JSON values)."""
        m = self.mixture
        summary = {"mixture": m.name, "seq_len": self.seq_len,
                   "global_batch_size": self.global_batch_size, "num_steps": self.num_steps,
                   "seed": self.seed, "stage_steps": list(self.plan.stage_steps),
                   "best_fit_window": self.best_fit_window,
                   "sources": [[s.name, s.packing] for s in m.sources],
                   "weights": [sorted(st.weights.items()) for st in m.stages],
                   "rows": {s.name: s.rows for s in self.plan.sources}}
        if self.heldout_tokens:  # a carved held-out slice changes what training reads
            summary["heldout_tokens"] = self.heldout_tokens
        return json.loads(json.dumps(summary))

    def plan_digest(self) -> str:
        blob = json.dumps(self.plan_summary(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def rows(self, global_rows: np.ndarray, provenance: bool = False) -> dict[str, np.ndarray]:
        """The batch arrays for any global row indices."""
        global_rows = np.asarray(global_rows, np.int64)
        batch = empty_batch(len(global_rows), self.seq_len, provenance)
        source, source_row = self.schedule.lookup(global_rows)
        for i, (layout, store) in enumerate(zip(self.layouts, self.stores)):
            out = np.nonzero(source == i)[0]
            if out.size:
                fill_rows(batch, out, layout.pieces(source_row[out]), store)
        if provenance:
            batch["source"][:] = source
        return batch

    def host_batch(self, step: int, process_index: int = 0, process_count: int = 1,
                   provenance: bool = False) -> dict[str, np.ndarray]:
        per_host = self.global_batch_size // process_count
        first = step * self.global_batch_size + process_index * per_host
        return self.rows(np.arange(first, first + per_host), provenance)


class _HostBatch:
    def __init__(self, data: MixtureData, process_index: int, process_count: int,
                 provenance: bool):
        self.data, self.args = data, (process_index, process_count, provenance)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        return self.data.host_batch(int(step), *self.args)


class DataIterator(grain.DatasetIterator):
    """Grain iterator over this host's batches; state = global step + plan + fingerprints."""

    def __init__(self, data: MixtureData, process_index: int, process_count: int, *,
                 num_threads: int = 2, prefetch: int = 4, provenance: bool = False):
        dataset = grain.MapDataset.range(data.num_steps).map(
            _HostBatch(data, process_index, process_count, provenance))
        read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        super().__init__(iter(dataset.to_iter_dataset(read)))
        self.data, self.process_index, self.process_count = data, process_index, process_count

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._parent)

    @property
    def step(self) -> int:
        """The global step of the next batch."""
        return int(self._parent.get_state()["next_index"])

    @property
    def plan(self) -> Plan:
        return self.data.plan

    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "step": self.step, "grain": self._parent.get_state(),
                "plan_digest": self.data.plan_digest(), "plan": self.data.plan_summary(),
                "sources": {name: {"fingerprint": fp, "path": st.path}
                            for (name, fp), st in zip(self.data.fingerprints.items(),
                                                      self.data.stores)}}

    def set_state(self, state: dict[str, Any]) -> None:
        check_state(self.data, state)
        self._parent.set_state(state["grain"])


def check_state(data: MixtureData, state: dict[str, Any]) -> None:
    """Raises DataStateError naming what differs between a saved state and `data`."""
    if state.get("version") != STATE_VERSION:
        raise DataStateError(f"data iterator state version {state.get('version')!r}, this code "
                             f"restores version {STATE_VERSION}")
    saved = state.get("sources", {})
    current = data.fingerprints
    for name in sorted(set(saved) | set(current)):
        if name not in current:
            raise DataStateError(f"source {name!r} is in the checkpoint but not in mixture "
                                 f"{data.mixture.name!r}")
        if name not in saved:
            raise DataStateError(f"source {name!r} of mixture {data.mixture.name!r} is not in "
                                 "the checkpoint")
        if saved[name]["fingerprint"] != current[name]:
            path = data.stores[data.mixture.source_names.index(name)].path
            raise DataStateError(
                f"source {name!r}: the token store at {path} has fingerprint {current[name]}, "
                f"the checkpoint was written against {saved[name]['fingerprint']} (store "
                f"{saved[name].get('path')}): the data changed; restore with the original store "
                "or start a fresh data stream")
    if state.get("plan_digest") != data.plan_digest():
        summary = data.plan_summary()
        diffs = [f"{k}: checkpoint {state['plan'].get(k)!r} != now {v!r}"
                 for k, v in summary.items() if state.get("plan", {}).get(k) != v]
        raise DataStateError("the data plan differs from the checkpoint's: " + "; ".join(diffs))
    for name, store in zip(data.mixture.source_names, data.stores):
        try:  # same manifest, but rewritten in place? (bounded: RESUME_SAMPLE_CHUNKS chunks)
            store.verify_chunks(sample=RESUME_SAMPLE_CHUNKS)
        except StoreError as e:
            raise DataStateError(f"source {name!r}: {e}; its manifest (fingerprint "
                                 f"{store.fingerprint}) no longer describes the data: restore "
                                 "with the original store or start a fresh data stream") from e


def build_iterator(mixture: Mixture | str, *, seq_len: int, global_batch_size: int,
                   num_steps: int | None = None, seed: int = 0, data_root: str | None = None,
                   process_index: int | None = None, process_count: int | None = None,
                   num_threads: int = 2, prefetch: int = 4, provenance: bool = False,
                   best_fit_window: int = 2048, vocab_size: int | None = None,
                   heldout_tokens: int = 0) -> DataIterator:
    """This host's checkpointable iterator of batches (see the module docstring).

    mixture: a Mixture, a mixture file path or module name. num_steps: the training length
    (default: the mixture's total_tokens / (global_batch_size x seq_len)); epochs per source
    follow from it and `max_epochs` is enforced. process_index / process_count default to
    jax.process_index() / jax.process_count(). vocab_size: the model's; a store holding a
    token id >= vocab_size is refused at open (StoreError naming it). heldout_tokens: carve
    that many held-out tokens out of each source without a held-out store, never trained on
    (phi4_jax/data/heldout.py).
    """
    if process_index is None or process_count is None:
        import jax  # noqa: PLC0415 (only when the caller does not say which host this is)

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by "
                         f"process_count {process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    data = MixtureData(mixture, seq_len=seq_len, global_batch_size=global_batch_size,
                       num_steps=num_steps, seed=seed, data_root=data_root,
                       best_fit_window=best_fit_window, vocab_size=vocab_size,
                       heldout_tokens=heldout_tokens)
    return DataIterator(data, process_index, process_count, num_threads=num_threads,
                        prefetch=prefetch, provenance=provenance)


def build_from_config(data: Any, *, global_batch_size: int, num_steps: int | None = None,
                      process_index: int | None = None,
                      process_count: int | None = None,
                      vocab_size: int | None = None, heldout_tokens: int = 0) -> DataIterator:
    """build_iterator for a run's typed `data` section (`phi4_jax.train.config.DataConfig`,
    or any object with its attributes): mixture (a registered name such as 'embedded' or
    'phi4_pretrain', a module or a file; mixture.load_mixture), seq_len, seed, cache_dir (where
    on-demand stores such as the embedded corpus are built; None: a temp dir) and data_root
    (where a mixture file's relative store paths live; may be None). `vocab_size`: the model's;
    a store holding an id at or above it is refused at open, naming the store."""
    mixture = load_mixture(data.mixture, cache_dir=data.cache_dir)
    return build_iterator(mixture, seq_len=data.seq_len, global_batch_size=global_batch_size,
                          num_steps=num_steps, seed=data.seed, data_root=data.data_root,
                          process_index=process_index, process_count=process_count,
                          vocab_size=vocab_size, heldout_tokens=heldout_tokens)


def store_entry(path: str, manifest: Any) -> dict[str, Any]:
    """What a run record keeps of a token store: where it is and its manifest's identity."""
    return {"path": os.path.abspath(path) if "://" not in path else path,
            "fingerprint": manifest.fingerprint, "num_tokens": manifest.num_tokens,
            "num_documents": manifest.num_documents}


def mixture_stores(data: Mapping[str, Any], *, verify_chunks: int | None = 8
                   ) -> dict[str, dict[str, Any]]:
    """The stores a run's `data` section would read (a mixture resolved as the pipeline
    resolves it), from their manifests; with verify_chunks, also `TokenStore.verify_chunks`
    (a store rewritten in place under an unchanged manifest gets "changed_in_place")."""
    if data.get("source") != "mixture":
        return {}
    mixture = load_mixture(data["mixture"], cache_dir=data.get("cache_dir"))
    mixture = mixture.resolve(data.get("data_root"))
    out = {}
    for source in mixture.sources:
        try:
            manifest = read_manifest(source.path)
            entry = store_entry(source.path, manifest)
            if verify_chunks is not None:
                open_store(source.path).verify_chunks(sample=verify_chunks)
        except StoreError as e:
            entry = {"path": source.path, "fingerprint": None, "error": str(e)}
            if "does not match its checksum" in str(e):
                entry["fingerprint"] = "changed_in_place"
        out[source.name] = entry
    return out


__all__ = ["DataIterator", "DataStateError", "MixtureData", "build_from_config", "build_iterator",
           "check_state", "mixture_stores", "store_entry"]
