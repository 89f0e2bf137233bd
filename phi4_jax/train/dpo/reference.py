"""Reference log-probs for DPO: computed once per (pair set, reference), cached on disk, reused.

Key. The pair set's fingerprint (`PairSet.fingerprint`: sha256 of every pair's ids, in order)
and the reference fingerprint: sha256 of the model config the reference runs under (JSON
without remat and scan_layers: a changed rope_theta or dtype changes log-probs) and either

    the checkpoint step directory it is read from (`source`: train.reference_from, else
    train.init_from): its step number, and for every file under STEP/state its relative path
    and size plus the bytes of files up to 64 KiB (orbax metadata and OCDBT manifests).
    Another step, a new save or another run changes it; a copy of the checkpoint elsewhere
    keeps it. No parameters are read to check the cache;
    or, with neither set, 'init' and train.seed (the policy's own initialization).

Layout (written to a temporary directory, then renamed: readers never see half a cache):

    CACHE_DIR/<pairs fingerprint[:16]>-<reference fingerprint[:16]>/
        logps.npy   float32 [N, 2]: sum of log pi_ref over the chosen / rejected completion
                    tokens of pair i (prompt tokens excluded), in the pair set's order
        meta.json   both full fingerprints, the reference's path and step, N, the model config,
                    the compute time

CACHE_DIR is dpo.cache_dir, else WORKDIR/reference_cache. A reader checks meta.json's full
fingerprints and the array shape; anything else is recomputed. With several hosts, process 0
reads and writes the cache and broadcasts it (only it needs to see CACHE_DIR); on a miss all
hosts compute together, each feeding its rows. `COUNTS['computed']` counts
computations in this process (tests assert a second run reads the cache).

Scoring: `Scorer(program, max_pairs_per_row)` owns one jitted log-prob function for the
program's shardings; `scorer.logps(params, pairs)` reuses it (no module-level cache: the
caller's Scorer lives as long as the caller keeps it).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from typing import TYPE_CHECKING, Any

import jax
import jax.experimental.multihost_utils as multihost
import numpy as np
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from phi4_jax.model import ModelConfig
from phi4_jax.sharding.rules import activate
from phi4_jax.train import checkpoint as ckpt_lib
from phi4_jax.train.dpo.batches import SEQUENCE_KEYS, PairSet, fill, layout
from phi4_jax.train.dpo.losses import sequence_logps

if TYPE_CHECKING:
    from phi4_jax.train.program import Program

log = logging.getLogger(__name__)
COUNTS: collections.Counter = collections.Counter()
SMALL_FILE = 64 * 1024


def model_digest(model_config: ModelConfig) -> str:
    """The model config as JSON, less fields that cannot change a log-prob (memory layout)."""
    fields = {k: v for k, v in dataclasses.asdict(model_config).items()
              if k not in ("remat", "scan_layers")}
    return json.dumps(fields, sort_keys=True, default=str)


def resolve_checkpoint(path: str | None) -> epath.Path | None:
    """The step directory a reference path means (newest step of a workdir), or None."""
    if not path:
        return None
    steps = ckpt_lib.step_dirs(path)
    if not steps:
        raise FileNotFoundError(f"reference checkpoint {path!r}: no step directory there")
    return steps[0]


def checkpoint_fingerprint(step_dir: epath.Path) -> str:
    """sha256 of a step directory's state files (names, sizes, small files' bytes)."""
    h = hashlib.sha256(f"step:{step_dir.name}".encode())
    state = epath.Path(step_dir) / "state"
    if not state.exists():
        raise FileNotFoundError(f"{state}: not a checkpoint step directory")
    for f in sorted(_files(state), key=str):
        rel = os.path.relpath(str(f), str(state))
        size = f.stat().length
        h.update(f"{rel}:{size}\n".encode())
        if size <= SMALL_FILE:
            h.update(f.read_bytes())
    return h.hexdigest()


def _files(root: epath.Path) -> list[epath.Path]:
    out = []
    for child in root.iterdir():
        out.extend(_files(child) if child.is_dir() else [child])
    return out


def reference_fingerprint(model_config: ModelConfig, step_dir: epath.Path | None, seed: int) -> str:
    h = hashlib.sha256(model_digest(model_config).encode())
    h.update(f"checkpoint:{checkpoint_fingerprint(step_dir)}".encode() if step_dir is not None
             else f"init:{seed}".encode())
    return h.hexdigest()


def cache_path(cache_dir: str, pairs_fp: str, reference_fp: str) -> str:
    return os.path.join(cache_dir, f"{pairs_fp[:16]}-{reference_fp[:16]}")


def load(path: str, pairs_fp: str, reference_fp: str, num_pairs: int) -> np.ndarray | None:
    """The cached array, or None when absent or not this key's."""
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        values = np.load(os.path.join(path, "logps.npy"))
    except (OSError, ValueError) as err:
        if os.path.exists(path):
            log.warning("reference cache %s unreadable (%s); recomputing", path, err)
        return None
    if (meta.get("pairs_fingerprint"), meta.get("reference_fingerprint")) != (
            pairs_fp, reference_fp) or values.shape != (num_pairs, 2):
        log.warning("reference cache %s belongs to another key; recomputing", path)
        return None
    return values


def save(path: str, values: np.ndarray, meta: dict[str, Any]) -> None:
    """Atomically: a temporary directory renamed to `path` (an existing one is replaced)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    np.save(os.path.join(tmp, "logps.npy"), values.astype(np.float32))
    with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


class Scorer:
    """Each pair's chosen / rejected completion log-prob sums under given parameters, with the
    program's mesh and shardings (one jitted function, compiled on first use)."""

    def __init__(self, program: Program, max_pairs_per_row: int,
                 vocab_chunks: int | None = None):
        self.program, self.max_pairs_per_row = program, max_pairs_per_row
        chunks = vocab_chunks or getattr(program.objective, "vocab_chunks", 1)

        def fn(params, batch):
            return sequence_logps(program.graphdef, params, batch,
                                  num_segments=2 * max_pairs_per_row, vocab_chunks=chunks)

        self._fn = jax.jit(fn, in_shardings=(program.state_shardings.params,
                                             {k: program.batch_shardings[k]
                                              for k in SEQUENCE_KEYS}),
                           out_shardings=NamedSharding(program.mesh, PartitionSpec()))

    def logps(self, params: Any, pairs: PairSet, *, log_every_s: float = 30.0) -> np.ndarray:
        """float32 [N, 2]: each pair's chosen / rejected completion log-prob sum under `params`.

        Pairs are packed in file order into the program's global batch shape; each host feeds
        its rows; every host gets all results. Also evaluates a policy on held-out pairs.
        """
        program = self.program
        global_rows, seq_len = program.batch_shapes["tokens"].shape
        host, hosts = jax.process_index(), jax.process_count()
        per_host = global_rows // hosts
        rows = layout(pairs, seq_len=seq_len, max_pairs_per_row=self.max_pairs_per_row,
                      order=np.arange(len(pairs)))
        out = np.full((len(pairs), 2), np.nan, np.float32)
        steps = -(-len(rows) // global_rows)
        t0 = last = time.perf_counter()
        done = 0
        for step in range(steps):
            chunk = rows[step * global_rows:(step + 1) * global_rows]
            chunk += [np.zeros(0, np.int64)] * (global_rows - len(chunk))
            local = fill(pairs, chunk[host * per_host:(host + 1) * per_host], seq_len)
            with activate(program.rules):
                batch = program.put_batch(local)
                sums = np.asarray(self._fn(params, {k: batch[k] for k in SEQUENCE_KEYS}))
            for r, row in enumerate(chunk):
                out[row, 0] = sums[r, 0:2 * len(row):2]
                out[row, 1] = sums[r, 1:2 * len(row):2]
                done += len(row)
            now = time.perf_counter()
            if now - last > log_every_s or step + 1 == steps:
                rate = done / max(now - t0, 1e-9)
                log.info("reference log-probs: batch %d/%d, %d/%d pairs, %.1f pairs/s, ETA "
                         "%.0fs", step + 1, steps, done, len(pairs), rate,
                         (len(pairs) - done) / rate)
                last = now
        if np.isnan(out).any():
            raise RuntimeError("reference log-probs: some pairs were not computed (packing bug)")
        return out


def prepare(program: Program, pairs: PairSet, workdir: str, *, source: str | None, seed: int,
            cache_dir: str | None, scorer: Scorer) -> np.ndarray:
    """The reference log-probs of `pairs` for this run: read from the cache, or computed once
    with the reference parameters (`source`'s newest step, else the seed-`seed` init) and
    written there (module docstring)."""
    step_dir = resolve_checkpoint(source)
    reference_fp = reference_fingerprint(program.model_config, step_dir, seed)
    path = cache_path(cache_dir or os.path.join(workdir, "reference_cache"), pairs.fingerprint,
                      reference_fp)
    values = load(path, pairs.fingerprint, reference_fp, len(pairs))
    if jax.process_count() > 1:  # process 0's cache decides: every host reuses or computes
        hit = bool(multihost.broadcast_one_to_all(np.int32(values is not None)))
        values = multihost.broadcast_one_to_all(
            values if values is not None else np.zeros((len(pairs), 2), np.float32)
        ) if hit else None
    if values is not None:
        log.info("reference log-probs: reusing %s (%d pairs)", path, len(pairs))
        return np.asarray(values)
    log.info("reference log-probs: computing %d pairs with %s -> %s", len(pairs),
             step_dir or f"the seed-{seed} initialization", path)
    t0 = time.perf_counter()
    if step_dir is not None:
        params = ckpt_lib.restore_params(str(step_dir), program.abstract_state.params,
                                         program.state_shardings.params)
    else:
        params = program.init().params
    values = scorer.logps(params, pairs)
    del params
    COUNTS["computed"] += 1
    if jax.process_index() == 0:
        save(path, values, {"pairs_fingerprint": pairs.fingerprint,
                            "reference_fingerprint": reference_fp,
                            "reference": str(step_dir) if step_dir else f"init:{seed}",
                            "num_pairs": len(pairs), "model": model_digest(program.model_config),
                            "seconds": round(time.perf_counter() - t0, 3),
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    multihost.sync_global_devices("phi4_jax_reference_cache")
    return values
