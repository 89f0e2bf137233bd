"""Tokenize a source into a token store with an Apache Beam pipeline (local runner by default).

    python -m phi4_jax.data.prepare --source_name web --input 'raw/web/*.jsonl.zst' \\
        --output stores/web
    python -m phi4_jax.data.prepare --source_name sft --format chat --text_field messages \\
        --input sft.jsonl --output stores/sft

Inputs are files, directories (walked recursively) or globs of JSONL (.gz/.zst), Parquet and plain
text (see phi4_jax.data.readers). Work is split into shards (one per JSONL/Parquet file, groups of
--files_per_shard text files). Each shard is tokenized by a Beam worker and written atomically to
--work_dir (default OUTPUT/_shards; any Beam filesystem, e.g. gs://) followed by a completion
marker; a killed or failed job resumes by re-running the same command: marked shards are skipped,
unmarked ones redone, so no document is lost or duplicated. When every shard is marked, the
driver merges them in shard order into the store (manifest last) and writes report.json/.txt.

Runners: unknown flags go to Beam's PipelineOptions. The default is Beam's in-process runner
for batch, `--runner=FnApiRunner` (what `DirectRunner` runs after it fails to download the Go
Prism runner, which it tries first). Parallel local workers: `--direct_num_workers=2
--direct_running_mode=multi_processing`. Dataflow: `--runner=DataflowRunner --project=P
--region=R --temp_location=gs://B/tmp --work_dir=gs://B/prepare/web --setup_file=./setup.py`
(workers need the phi4_jax package).

Store formats (`--store_format`): `mmap` (memory-mapped files in a local directory) or `zarr3`
(phi4_jax.data.ts_store: zarr v3 arrays on any tensorstore kvstore). An `--output` URL
(gs://BUCKET/PATH, memory://, file://) means zarr3 and puts the shards under OUTPUT/_shards on
the same kvstore (workers write them through tensorstore, so gs:// needs no Beam GCP extras);
a local --output defaults to mmap. Either way the manifest is written last and a shard's
completion marker means it is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence

from phi4_jax import cli

cli.quiet_library_noise()  # before Beam's import logs "apitools not found"

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from phi4_jax.data import chat, sft  # noqa: E402
from phi4_jax.data.readers import REASONS, ReadOptions, detect_format, read_records  # noqa: E402
from phi4_jax.data.store import (  # noqa: E402
    Manifest,
    StoreError,
    is_url,
    read_manifest,
    store_writer,
)
from phi4_jax.data.tokenizer import TOKENIZER_ID, tokenize_documents  # noqa: E402
from phi4_jax.io import BadInputReport, atomic_write_bytes  # noqa: E402

log = logging.getLogger("phi4_jax.prepare")


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    source_name: str
    output: str
    work_dir: str
    read: ReadOptions = ReadOptions()
    append_eos: bool = True  # <|endoftext|> after every document (not for chat)
    max_doc_tokens: int | None = None
    num_threads: int = 2  # tiktoken threads per worker
    store_format: str | None = None  # "mmap" or "zarr3"; None: zarr3 for a URL output, else mmap


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    shard_id: int
    files: tuple[str, ...]


def _shard_path(work_dir: str, shard_id: int, suffix: str) -> str:
    return f"{work_dir.rstrip('/')}/{shard_id:06d}.{suffix}"


# Work dirs on these schemes are written through tensorstore's kvstore (as the zarr3 store
# itself); local paths and other schemes (hdfs://, s3:// with Beam's extras) through Beam.
_KVSTORE_SCHEMES = ("gs://", "memory://", "file://")


def _on_kvstore(path: str) -> bool:
    return path.startswith(_KVSTORE_SCHEMES)


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent, name


def write_atomic(path: str, data: bytes) -> None:
    """Writes a file on any Beam filesystem (via a temporary name and a rename) or kvstore URL
    (one object write, atomic by itself)."""
    if _on_kvstore(path):
        from phi4_jax.data import ts_store  # noqa: PLC0415

        ts_store.write_bytes(*_split(path), data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    FileSystems.rename([tmp], [path])


def read_bytes(path: str) -> bytes:
    if _on_kvstore(path):
        from phi4_jax.data import ts_store  # noqa: PLC0415

        data = ts_store.read_bytes(*_split(path))
        if data is None:
            raise FileNotFoundError(path)
        return data
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def file_exists(path: str) -> bool:
    if _on_kvstore(path):
        from phi4_jax.data import ts_store  # noqa: PLC0415

        return ts_store.exists(*_split(path))
    return FileSystems.exists(path)


def count_markers(work_dir: str) -> int:
    if _on_kvstore(work_dir):
        from phi4_jax.data import ts_store  # noqa: PLC0415

        return sum(k.endswith(".done") for k in ts_store.list_keys(work_dir))
    pattern = f"{work_dir.rstrip('/')}/*.done"
    return len(FileSystems.match([pattern])[0].metadata_list)


def remove_work_dir(work_dir: str, shards: Sequence[ShardSpec]) -> None:
    if _on_kvstore(work_dir):  # object by object, by name (no listing: see ts_store.delete)
        from phi4_jax.data import ts_store  # noqa: PLC0415

        for shard in shards:
            for suffix in ("tokens.npy", "lengths.npy", "mask.npy", "report.json", "done"):
                ts_store.delete(work_dir, f"{shard.shard_id:06d}.{suffix}")
        ts_store.delete(work_dir, "prepare.json")
    elif "://" not in work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _tokenize(config: PrepareConfig, records: list[tuple[str, str, object]],
              report: BadInputReport) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Tokenizes (path, where, payload) records; returns token and loss-mask arrays."""
    if config.read.format == "chat":
        ids, masks = [], []
        for path, where, messages in records:
            try:  # the SFT store builder's validator and cuts: both keep the same turns
                turns, _ = sft.training_turns(messages)
                tokens, mask = chat.render(turns)
            except sft.Skip as e:
                report.bad(path, "malformed_conversation", where, f"{e.reason}: {e}")
                continue
            except chat.ChatFormatError as e:
                report.bad(path, "malformed_conversation", where, str(e))
                continue
            ids.append((path, where, tokens))
            masks.append(mask)
    else:
        encoded = tokenize_documents([r[2] for r in records], append_eos=config.append_eos,
                                     num_threads=config.num_threads)
        ids = [(path, where, np.asarray(t, np.uint32)) for (path, where, _), t in
               zip(records, encoded)]
        masks = [None] * len(ids)
    kept, kept_masks = [], []
    for (path, where, tokens), mask in zip(ids, masks):
        if config.max_doc_tokens is not None and len(tokens) > config.max_doc_tokens:
            report.bad(path, "oversized_document", where, f"{len(tokens)} tokens")
            continue
        report.ok(path)
        kept.append(tokens)
        kept_masks.append(mask)
    return kept, kept_masks


def process_shard(shard: ShardSpec, config: PrepareConfig) -> dict:
    """Tokenizes one shard and writes it atomically with its marker (skipped if marked)."""
    marker = _shard_path(config.work_dir, shard.shard_id, "done")
    if file_exists(marker):
        return {"shard": shard.shard_id, "skipped": True}
    start = time.perf_counter()
    report = BadInputReport(REASONS)
    docs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    pending: list[tuple[str, str, object]] = []
    for path in shard.files:
        for where, payload in read_records(path, config.read, report):
            pending.append((path, where, payload))
            if len(pending) >= 1024:
                d, m = _tokenize(config, pending, report)
                docs += d
                masks += m
                pending = []
    d, m = _tokenize(config, pending, report)
    docs += d
    masks += m
    tokens = np.concatenate(docs) if docs else np.zeros(0, np.uint32)
    lengths = np.array([len(d) for d in docs], np.int64)
    write = {"tokens.npy": tokens.astype(np.uint32), "lengths.npy": lengths}
    if config.read.format == "chat":
        write["mask.npy"] = np.concatenate(masks) if masks else np.zeros(0, np.uint8)
    for suffix, array in write.items():
        write_atomic(_shard_path(config.work_dir, shard.shard_id, suffix), _npy_bytes(array))
    write_atomic(_shard_path(config.work_dir, shard.shard_id, "report.json"),
                 json.dumps(report.to_json()).encode())
    summary = {"shard": shard.shard_id, "documents": len(docs), "tokens": int(tokens.size),
               "bad": sum(report.totals().values()), "seconds": time.perf_counter() - start}
    write_atomic(marker, json.dumps(summary).encode())  # the completion marker, last
    return summary


class TokenizeShards(beam.DoFn):
    """The Beam step: tokenizes shards, counts Beam metrics, logs progress with rate and ETA."""

    def __init__(self, config: PrepareConfig, num_shards: int, already_done: int):
        self.config, self.num_shards, self.already_done = config, num_shards, already_done
        self.started = time.time()
        self.documents = beam.metrics.Metrics.counter("phi4_prepare", "documents")
        self.tokens = beam.metrics.Metrics.counter("phi4_prepare", "tokens")
        self.bad = beam.metrics.Metrics.counter("phi4_prepare", "bad_records")

    def process(self, shard):  # a ShardSpec (no annotation: Beam would warn on the string)
        summary = process_shard(shard, self.config)
        if summary.get("skipped"):
            return
        self.documents.inc(summary["documents"])
        self.tokens.inc(summary["tokens"])
        self.bad.inc(summary["bad"])
        done = count_markers(self.config.work_dir)
        elapsed = time.time() - self.started
        new = max(done - self.already_done, 1)
        eta = elapsed / new * (self.num_shards - done)
        log.info("[%s] shard %d: %d docs, %d tokens, %d bad (%.2fM tok/s); %d/%d shards, "
                 "elapsed %.0fs, ETA %.0fs", self.config.source_name, summary["shard"],
                 summary["documents"], summary["tokens"], summary["bad"],
                 summary["tokens"] / max(summary["seconds"], 1e-9) / 1e6, done,
                 self.num_shards, elapsed, eta)
        yield summary


def list_inputs(patterns: Sequence[str]) -> list[str]:
    """Expands files, directories (recursively, hidden entries skipped) and globs, sorted.

    A pattern that names nothing (a missing path, a glob matching nothing, a directory without
    files) or that names a non-regular file itself (FIFO, socket, device) is a `cli.UsageError`
    naming it. Non-regular files found by a walk or a glob are listed: the reader counts them
    `unreadable_file` without opening them."""
    files = []
    for pattern in patterns:
        if "://" not in pattern and os.path.isdir(pattern):
            found = []
            for dirpath, dirnames, filenames in os.walk(pattern):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
            if not found:
                raise cli.UsageError(f"--input {pattern}: the directory holds no input files")
            files += found
        elif "://" in pattern or any(c in pattern for c in "*?["):
            try:
                matches = FileSystems.match([pattern])[0].metadata_list
            except Exception as e:  # Beam wraps every filesystem failure in BeamIOError
                raise cli.UsageError(f"--input {pattern}: cannot list it ({e})") from e
            if not matches:
                raise cli.UsageError(f"--input {pattern}: no files match this pattern")
            files += [m.path for m in matches]
        elif os.path.isfile(pattern):
            files.append(pattern)
        elif os.path.exists(pattern):
            raise cli.UsageError(f"--input {pattern}: not a regular file (a FIFO, socket or "
                                 "device is never read)")
        else:
            raise cli.UsageError(f"--input {pattern}: no such file or directory")
    return sorted(set(files))


def make_shards(files: Sequence[str], fmt: str, files_per_shard: int
                ) -> tuple[list[ShardSpec], list[str]]:
    """One shard per JSONL/Parquet file, text files in groups; plus the unsupported files."""
    groups, text, unsupported = [], [], []
    for path in files:
        kind = detect_format(path, fmt)
        if kind is None:
            unsupported.append(path)
        elif kind == "text":
            text.append(path)
        else:
            groups.append((path,))
    groups += [tuple(text[i:i + files_per_shard]) for i in range(0, len(text), files_per_shard)]
    groups.sort()
    return [ShardSpec(i, g) for i, g in enumerate(groups)], unsupported


def _prepare_key(config: PrepareConfig, shards: list[ShardSpec]) -> str:
    stats = []
    for shard in shards:
        for path in shard.files:
            if "://" in path:
                meta = FileSystems.match([path])[0].metadata_list
                stats.append([path, meta[0].size_in_bytes if meta else -1,
                              meta[0].last_updated_in_seconds if meta else -1])
            else:
                try:
                    st = os.stat(path)
                    stats.append([path, st.st_size, st.st_mtime_ns])
                except OSError:  # e.g. a dangling symlink: the reader counts it unreadable
                    stats.append([path, -1, -1])
    blob = json.dumps([TOKENIZER_ID, dataclasses.asdict(config.read), config.append_eos,
                       config.max_doc_tokens, config.source_name,
                       [list(s.files) for s in shards], stats], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_output(output: str, name: str, data: bytes) -> None:
    if is_url(output):
        from phi4_jax.data import ts_store  # noqa: PLC0415

        ts_store.write_bytes(output, name, data)
    else:
        atomic_write_bytes(os.path.join(output, name), data)


def merge(config: PrepareConfig, shards: list[ShardSpec], report: BadInputReport,
          key: str) -> Manifest:
    """Merges the marked shards, in order, into the store; writes the report beside it."""
    from tqdm import tqdm  # noqa: PLC0415

    chat_format = config.read.format == "chat"
    writer = store_writer(config.output, config.source_name, with_loss_mask=chat_format,
                          store_format=config.store_format)
    for shard in tqdm(shards, desc=f"merge {config.source_name}", unit="shard"):
        tokens = np.load(io.BytesIO(read_bytes(_shard_path(config.work_dir, shard.shard_id,
                                                           "tokens.npy"))))
        lengths = np.load(io.BytesIO(read_bytes(_shard_path(config.work_dir, shard.shard_id,
                                                            "lengths.npy"))))
        mask = (np.load(io.BytesIO(read_bytes(_shard_path(config.work_dir, shard.shard_id,
                                                          "mask.npy")))) if chat_format else None)
        if lengths.size:
            writer.append(tokens, lengths, mask)
        report.merge(BadInputReport.from_json(reasons=REASONS, raw=json.loads(read_bytes(
            _shard_path(config.work_dir, shard.shard_id, "report.json")))))
    _write_output(config.output, "report.json", json.dumps(report.to_json(), indent=1).encode())
    _write_output(config.output, "report.txt", (report.format_text() + "\n").encode())
    return writer.finish({"prepare_key": key, "shards": len(shards),
                          "records_ok": report.records_ok,
                          "bad_total": sum(report.totals().values()),
                          "format": config.read.format, "text_field": config.read.text_field})


def run(config: PrepareConfig, inputs: Sequence[str], *, files_per_shard: int = 256,
        beam_args: Sequence[str] = (), keep_shards: bool = False) -> Manifest:
    """Runs (or resumes) the whole job; returns the store's manifest."""
    shards, unsupported = make_shards(list_inputs(inputs), config.read.format, files_per_shard)
    key = _prepare_key(config, shards)
    try:
        done = read_manifest(config.output)
    except StoreError:
        done = None
    if done is not None and done.info.get("prepare_key") == key and done.format == (
            config.store_format or ("zarr3" if is_url(config.output) else "mmap")):
        log.info("[%s] already prepared: %s", config.source_name, config.output)
        return done
    plan_path = f"{config.work_dir.rstrip('/')}/prepare.json"
    if file_exists(plan_path):
        if json.loads(read_bytes(plan_path))["key"] != key:
            raise RuntimeError(f"{config.work_dir} holds shards of a different prepare job (inputs "
                               "or options changed); delete it or pass another --work_dir")
    else:
        write_atomic(plan_path, json.dumps({"key": key, "shards": len(shards)}).encode())
    pending = [s for s in shards if not file_exists(_shard_path(config.work_dir, s.shard_id,
                                                                "done"))]
    log.info("[%s] %d input files -> %d shards (%d already done), %d unsupported files",
             config.source_name, sum(len(s.files) for s in shards), len(shards),
             len(shards) - len(pending), len(unsupported))
    if pending:
        step = TokenizeShards(config, len(shards), len(shards) - len(pending))
        args = list(beam_args)
        if not any(a == "--runner" or a.startswith("--runner=") for a in args):
            # Beam's local batch runner, in process. (The "DirectRunner" name first tries to
            # download the Go Prism runner, then falls back to this one.)
            args.insert(0, "--runner=FnApiRunner")
        with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
            _ = (pipeline | "Shards" >> beam.Create(pending)
                 | "Spread" >> beam.Reshuffle() | "Tokenize" >> beam.ParDo(step))
    missing = [s.shard_id for s in shards
               if not file_exists(_shard_path(config.work_dir, s.shard_id, "done"))]
    if missing:
        raise RuntimeError(f"shards {missing[:10]} have no completion marker; re-run to resume")
    report = BadInputReport(REASONS)
    for path in unsupported:
        report.bad(path, "unsupported_file_type", "file", os.path.splitext(path)[1] or path)
    manifest = merge(config, shards, report, key)
    if not keep_shards:
        remove_work_dir(config.work_dir, shards)
    return manifest


PROG = "python -m phi4_jax.data.prepare"


def main(argv: Sequence[str] | None = None) -> int:
    """The command: user errors (bad flags, an input naming nothing) are `cli.UsageError`s."""
    first_command = "\n".join(__doc__.split("\n\n")[1].split("\n")[:2])  # its 2 lines
    parser = cli.parser(PROG, __doc__, example=" ".join(first_command.replace("\\", "").split()))
    parser.add_argument("--input", action="append", required=True,
                        help="file, directory or glob (repeatable)")
    parser.add_argument("--output", required=True,
                        help="token store directory, or URL (gs://BUCKET/PATH: zarr3)")
    parser.add_argument("--store_format", choices=("mmap", "zarr3"), default=None,
                        help="store format (default: zarr3 for a URL --output, else mmap)")
    parser.add_argument("--source_name", required=True, help="logical source name")
    parser.add_argument("--work_dir", help="shard directory (default OUTPUT/_shards)")
    parser.add_argument("--format", default="auto",
                        choices=("auto", "jsonl", "parquet", "text", "chat"))
    parser.add_argument("--text_field", default=None,
                        help="JSON key / Parquet column (default text; messages for chat)")
    parser.add_argument("--max_doc_chars", type=int, default=ReadOptions.max_doc_chars)
    parser.add_argument("--max_doc_tokens", type=int, default=None)
    parser.add_argument("--no_append_eos", action="store_true",
                        help="do not end documents with <|endoftext|>")
    parser.add_argument("--files_per_shard", type=int, default=256, help="text files per shard")
    parser.add_argument("--num_threads", type=int, default=2, help="tokenizer threads per worker")
    parser.add_argument("--keep_shards", action="store_true")
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    text_field = args.text_field or ("messages" if args.format == "chat" else "text")
    config = PrepareConfig(
        source_name=args.source_name, output=args.output,
        work_dir=args.work_dir or f"{args.output.rstrip('/')}/_shards",
        read=ReadOptions(format=args.format, text_field=text_field,
                         max_doc_chars=args.max_doc_chars),
        append_eos=not args.no_append_eos and args.format != "chat",
        max_doc_tokens=args.max_doc_tokens, num_threads=args.num_threads,
        store_format=args.store_format)
    if args.store_format == "mmap" and is_url(args.output):
        raise cli.UsageError(f"--output {args.output}: a URL holds zarr3 stores; drop "
                             "--store_format=mmap or give a local directory")
    list_inputs(args.input)  # an --input naming nothing is refused before anything is written
    if not is_url(args.output):  # the run record lives beside a local store only
        from phi4_jax import runs  # the run record (runs reads stores: not imported at load)

        runs.write_job_record(args.output, job=PROG, argv=argv, inputs=args.input,
                              config={**vars(args), "beam_args": beam_args})
    manifest = run(config, args.input, files_per_shard=args.files_per_shard,
                   beam_args=beam_args, keep_shards=args.keep_shards)
    print(read_bytes(f"{args.output.rstrip('/')}/report.txt" if is_url(args.output) else
                     os.path.join(args.output, "report.txt")).decode(), end="")
    print(f"store {args.output}: {manifest.num_documents} documents, {manifest.num_tokens} tokens, "
          f"fingerprint {manifest.fingerprint[:16]}")
    return 0


if __name__ == "__main__":
    # Run the importable module, not __main__, so Beam workers in other processes can unpickle
    # ShardSpec and TokenizeShards by name.
    from phi4_jax.data import prepare

    cli.run(prepare.main, prog=PROG)
