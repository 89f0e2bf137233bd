"""Data pipeline throughput and restore time, against Grain's own packing in the same run.

    JAX_PLATFORMS=cpu python bench/data.py                       # embedded corpus, 4K rows
    JAX_PLATFORMS=cpu python bench/data.py --mixture data_mixtures/phi4_pretrain.py \\
        --data_root /stores --seq_len 4096 --batch 16

Both pipelines read the same token stores from disk (memory-mapped) and run single-threaded
(Grain ReadOptions(num_threads=0)), so tokens per CPU-second is tokens/s per core:

- phi4_jax: build_iterator(), the mixture with exact epochs and token ratios, concat packing,
  emitting tokens, targets, positions, segment ids and loss mask.
- grain: each source's documents cut into pieces of at most seq_len, `MapDataset.shuffle`,
  `MapDataset.mix` with the same weights, `FirstFitPackIterDataset` (num_packing_bins = batch)
  and `.batch`: tokens with segment ids and positions (no targets or loss mask).

"slots" counts every position of every row (padding included); "real" only document tokens.
Restore time: a fresh iterator (open stores, plan) + set_state at 90% of the budget + the first
batch.

Store formats (same mixture, same run): the memory-mapped stores against their zarr3 copies
(phi4_jax.data.convert_store) on local files and, with the `gcp-storage-emulator` package
(`--emulator`, on by default when installed), in gs:// on a local emulator: a lower bound for a
real bucket (one Python process serves every request). The demand side: tokens/s one v5p host
(4 chips) trains Phi-4 14B at, from its model FLOPs per token at 50% MFU; "hosts per core" is
what one core of the reader's packed tokens/s serves.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import grain  # noqa: E402
import numpy as np  # noqa: E402
from grain.experimental import FirstFitPackIterDataset  # noqa: E402

from data_mixtures import embedded  # noqa: E402 (the package registers the mixture names)
from phi4_jax.data.convert_store import convert  # noqa: E402
from phi4_jax.data.mixture import load_mixture  # noqa: E402
from phi4_jax.data.pipeline import build_iterator  # noqa: E402
from phi4_jax.data.store import StoreError, TokenStore, read_manifest  # noqa: E402
from phi4_jax.model.config import PRESETS  # noqa: E402
from phi4_jax.train.flops import PEAK_FLOPS, flops_per_token  # noqa: E402

V5P_CHIPS_PER_HOST, MFU = 4, 0.5


def _measure(iterator, steps: int) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    slots = real = 0
    for _ in range(steps):
        batch = next(iterator)
        segments = batch.get("segment_ids", batch.get("tokens_segment_ids"))
        slots += segments.size
        real += int((segments > 0).sum())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"steps": steps, "wall": wall, "cpu": cpu, "slots_per_s": slots / wall,
            "real_per_s": real / wall, "real_per_cpu_s": real / cpu}


class _Pieces:
    """Random access to a store's documents cut into pieces of at most seq_len tokens."""

    def __init__(self, store: TokenStore, seq_len: int):
        lengths = store.doc_lengths()
        n = -(-lengths // seq_len)
        doc = np.repeat(np.arange(len(lengths)), n)
        ramp = np.arange(doc.size) - np.repeat(np.cumsum(n) - n, n)
        self.start = store.offsets[doc] + ramp * seq_len
        self.end = np.minimum(self.start + seq_len, store.offsets[doc + 1])
        self.tokens = store.tokens

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"tokens": np.asarray(self.tokens[self.start[i]:self.end[i]], np.int32)}


def grain_first_fit(mixture, seq_len: int, batch: int, seed: int):
    datasets = [grain.MapDataset.source(_Pieces(TokenStore(s.path), seq_len)).shuffle(seed)
                .repeat() for s in mixture.sources]
    weights = [mixture.stages[0].weights.get(s.name, 0.0) for s in mixture.sources]
    mixed = grain.MapDataset.mix(datasets, weights).to_iter_dataset(
        grain.ReadOptions(num_threads=0))
    packed = FirstFitPackIterDataset(mixed, length_struct={"tokens": seq_len},
                                     num_packing_bins=batch, shuffle_bins=False)
    return iter(packed.batch(batch))


def host_demand(seq_len: int = 4096) -> float:
    """Tokens/s one v5p host consumes training Phi-4 14B at MFU (the demand side)."""
    per_chip = MFU * PEAK_FLOPS["TPU v5p"] / flops_per_token(PRESETS["phi4_14b"], seq_len)
    return V5P_CHIPS_PER_HOST * per_chip


def copies(mixture, root: str):
    """The mixture with every store converted to zarr3 under `root` (kept between runs when the
    copy's manifest has the source's fingerprint)."""
    sources = []
    for s in mixture.sources:
        dest = f"{root.rstrip('/')}/{s.name}"
        try:
            done = read_manifest(dest).fingerprint == TokenStore(s.path).fingerprint
        except StoreError:
            done = False
        if not done:
            convert(s.path, dest, store_format="zarr3")
        sources.append(dataclasses.replace(s, path=dest))
    return mixture.replace(sources=tuple(sources))


def cpu_line() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixture", default="embedded",
                        help="a mixture name ('embedded', 'phi4_pretrain', ...) or file")
    parser.add_argument("--data_root", help="store root for a mixture file")
    parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "phi4_data"))
    parser.add_argument("--budget_tokens", type=int, default=20_000_000,
                        help="embedded corpus budget (its unique tokens scale with it)")
    parser.add_argument("--seq_len", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=16, help="rows per host batch")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--emulator", action=argparse.BooleanOptionalAction, default=None,
                        help="also read zarr3 copies from a local GCS emulator (default: when "
                             "gcp-storage-emulator is installed)")
    args = parser.parse_args(argv)
    if args.mixture == "embedded":
        mixture = embedded.build_mixture(args.cache_dir, budget_tokens=args.budget_tokens)
    else:
        mixture = load_mixture(args.mixture, cache_dir=args.cache_dir).resolve(args.data_root)
    unique = sum(TokenStore(s.path).num_tokens for s in mixture.sources)

    best_fit = mixture.replace(sources=tuple(dataclasses.replace(s, packing="best_fit")
                                             for s in mixture.sources))

    def ours(threads: int, mix=mixture):
        return build_iterator(mix, seq_len=args.seq_len, global_batch_size=args.batch,
                              process_index=0, process_count=1, num_threads=threads)

    probe = ours(0)
    steps = min(args.steps, probe.data.num_steps - 1)
    next(grain_first_fit(mixture, args.seq_len, args.batch, 0))  # warm the page cache
    next(probe)
    rows = [("phi4_jax mixture (exact epochs, concat)", _measure(ours(0), steps)),
            ("phi4_jax mixture, 2 Grain threads", _measure(ours(2), steps)),
            ("phi4_jax mixture, best-fit packing", _measure(ours(0, best_fit), steps)),
            ("grain mix + FirstFitPackIterDataset", _measure(
                grain_first_fit(mixture, args.seq_len, args.batch, 0), steps))]

    formats = [("mmap, local files", mixture),
               ("zarr3 zstd, local files", copies(mixture, os.path.join(
                   args.cache_dir, f"zarr3-{mixture.name}")))]
    emulator = None
    if args.emulator is not False:
        try:
            from tests.data import gcs_emulator  # noqa: PLC0415
            emulator, url = gcs_emulator.start()
            os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
            formats.append(("zarr3 zstd, gs:// on the emulator", copies(
                mixture, f"gs://{gcs_emulator.BUCKET}/bench")))
        except (ImportError, RuntimeError) as e:
            if args.emulator:
                raise
            print(f"(no emulator: {e})")
    store_rows = []
    try:
        for name, mix in formats:
            next(ours(0, mix))  # open, plan, warm
            store_rows.append((name, 0, _measure(ours(0, mix), steps)))
            if "emulator" in name:
                store_rows.append((name, 2, _measure(ours(2, mix), steps)))
    finally:
        if emulator is not None:
            gcs_emulator.stop(emulator)

    restores = []
    for name, mix in (("concat", mixture), ("best-fit", best_fit)):
        total = ours(0, mix).data.num_steps
        late = int(total * 0.9)
        state = dict(ours(0, mix).get_state(), step=late, grain={"next_index": late})
        start = time.perf_counter()
        fresh = ours(0, mix)
        fresh.set_state(state)
        next(fresh)
        restores.append((name, late, total, time.perf_counter() - start))

    print(f"data pipeline benchmark: mixture {mixture.name} ({len(mixture.sources)} sources, "
          f"{unique / 1e6:.1f}M unique tokens on disk), seq_len {args.seq_len}, "
          f"{args.batch} rows per batch, {steps} batches, single-threaded unless noted")
    header = (f"{'pipeline':<40}{'slots/s':>12}{'real tok/s':>12}{'real tok/cpu-s':>16}"
              f"{'fill':>7}")
    print(header)
    print("-" * len(header))
    for name, r in rows:
        fill = r["real_per_s"] / r["slots_per_s"]
        print(f"{name:<40}{r['slots_per_s'] / 1e6:>11.2f}M{r['real_per_s'] / 1e6:>11.2f}M"
              f"{r['real_per_cpu_s'] / 1e6:>15.2f}M{fill:>7.1%}")
    ratio = rows[0][1]["real_per_cpu_s"] / rows[-1][1]["real_per_cpu_s"]
    print(f"ratio, real tokens per core (phi4_jax concat / grain FirstFit): {ratio:.1f}x  "
          f"(target >= 1M tokens/s per core)")
    demand = host_demand(args.seq_len)
    print(f"\nstore formats, phi4_jax concat, same mixture and run ({cpu_line()}); demand: one "
          f"v5p host (4 chips) trains Phi-4 14B on {demand / 1e3:.1f}K tokens/s at "
          f"{MFU:.0%} MFU (seq {args.seq_len})")
    header = (f"{'store':<36}{'threads':>8}{'real tok/s':>12}{'real tok/cpu-s':>16}"
              f"{'hosts/core':>12}")
    print(header)
    print("-" * len(header))
    for name, threads, r in store_rows:
        print(f"{name:<36}{threads:>8}{r['real_per_s'] / 1e6:>11.2f}M"
              f"{r['real_per_cpu_s'] / 1e6:>15.2f}M{r['real_per_cpu_s'] / demand:>12.0f}")
    print("real tok/cpu-s counts this process only (the emulator's own CPU is not in it); "
          "hosts/core = real tok/cpu-s / demand")
    for name, late, total, seconds in restores:
        print(f"restore ({name}): fresh iterator + set_state(step {late} of {total}) + first "
              f"batch: {seconds:.3f} s  (target < 5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
