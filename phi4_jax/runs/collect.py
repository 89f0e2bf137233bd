"""What a run record holds about the machine and the inputs, collected without side effects.

    code()         the git checkout phi4_jax runs from: commit, dirty, a hash of the diff (and
                   the diff itself when under DIFF_INLINE_BYTES), changed and untracked files'
                   content hashes
    packages()     Python, the key versions (KEY_PACKAGES) and every installed distribution
    topology(mesh) device kind, counts, slices, the mesh's axis sizes
    environment()  the variables that change compilation or numerics (XLA_FLAGS, JAX_*, ...)
    stores(it)     the token stores of a data iterator (the mixture pipeline's), by source name
    files(paths)   sha256 per local file (a listing digest per directory, the fingerprint of
                   a token store directory), URL and generation per gs:// object
    seeds(config)  every field named `seed` (or `*_seed`) of a config, by dotted path

Collectors return JSON values. What one cannot tell (no git checkout, a missing input, no GCS
client) is None or an entry with the reason under "error"; `phi4_jax.runs.record` also turns
any exception of a collector into such an entry, so collecting never fails a run.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import Any

DIFF_INLINE_BYTES = 64 * 1024  # the diff is stored in the record when smaller than this
KEY_PACKAGES = ("jax", "jaxlib", "libtpu", "flax", "optax", "orbax-checkpoint", "grain",
                "numpy", "ml-collections", "tensorstore", "tiktoken", "apache-beam")
ENV_PREFIXES = ("XLA_", "JAX_", "LIBTPU", "TPU_ACCELERATOR_TYPE", "TPU_SKIP", "NVIDIA_TF32",
                "PHI4_JAX_")
HASH_CHUNK = 1 << 24
DIR_FILE_LIMIT = 100_000  # files listed per input directory
DIR_CONTENT_BYTES = 4 << 20  # directory members up to this size are hashed by content
GLOB_LIMIT = 10_000  # files per input glob
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git(*args: str, root: str = REPO_ROOT, binary: bool = False) -> Any:
    done = subprocess.run(["git", "-C", root, *args], capture_output=True, check=True,
                          timeout=60)
    return done.stdout if binary else done.stdout.decode("utf-8", "replace").strip()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def code(root: str = REPO_ROOT) -> dict[str, Any]:
    """The checkout's commit and whether (and how) the working tree differs from it.

    dirty: tracked files changed (staged or not) or untracked, not ignored files present.
    changed / untracked: those files' content sha256 by path (None: deleted), so two records
    of one commit name the files that differ. diff_sha256: sha256 of `git diff HEAD --binary`
    plus one line per untracked file (path and content sha256); diff: that patch when smaller
    than DIFF_INLINE_BYTES, else None."""
    out: dict[str, Any] = {"root": root, "commit": None, "branch": None, "dirty": None,
                           "diff_sha256": None, "diff_bytes": 0, "diff": None, "changed": {},
                           "untracked": {}}
    try:
        top = _git("rev-parse", "--show-toplevel", root=root)
        if os.path.realpath(top) != os.path.realpath(root):
            return out | {"error": f"{root} is not the top of a git checkout"}
        out["commit"] = _git("rev-parse", "HEAD", root=root)
        out["branch"] = _git("rev-parse", "--abbrev-ref", "HEAD", root=root)
        patch = _git("diff", "HEAD", "--binary", root=root, binary=True)
        names = _git("ls-files", "--others", "--exclude-standard", "-z", root=root, binary=True)
        modified = _git("diff", "HEAD", "--name-only", "-z", root=root, binary=True)
    except (OSError, subprocess.SubprocessError) as e:
        return out | {"error": f"git: {e}"}
    untracked, changed = _hashes(root, names), _hashes(root, modified)
    digest = hashlib.sha256(patch)
    for name, sha in untracked.items():
        digest.update(f"untracked {name} {sha}\n".encode())
    dirty = bool(patch) or bool(untracked)
    out.update(dirty=dirty, changed=changed, untracked=untracked, diff_bytes=len(patch),
               diff_sha256=digest.hexdigest() if dirty else None,
               diff=patch.decode("utf-8", "replace") if patch and len(patch) < DIFF_INLINE_BYTES
               else None)
    return out


def _hashes(root: str, names: bytes) -> dict[str, str | None]:
    out = {}
    for name in sorted(n for n in names.decode("utf-8", "replace").split("\0") if n):
        path = os.path.join(root, name)
        out[name] = sha256_file(path) if os.path.isfile(path) else None
    return out


def _normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def packages() -> dict[str, Any]:
    """Python, the key packages' versions (None: not installed) and every distribution."""
    dists: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(_normalized(name), dist.version)
    return {"python": platform.python_version(),
            "implementation": sys.implementation.name, "platform": platform.platform(),
            "key": {name: dists.get(name) for name in KEY_PACKAGES},
            "distributions": dict(sorted(dists.items()))}


def topology(mesh: Any = None) -> dict[str, Any]:
    """Devices (all processes') and the mesh: what a rerun needs to place the run the same."""
    import jax

    devices = list(mesh.devices.flat) if mesh is not None else jax.devices()
    first = devices[0]
    slices = {getattr(d, "slice_index", 0) for d in devices}
    return {"platform": first.platform, "device_kind": first.device_kind,
            "device_count": len(devices), "local_device_count": jax.local_device_count(),
            "process_count": jax.process_count(), "num_slices": len(slices),
            "mesh": {str(k): int(v) for k, v in mesh.shape.items()} if mesh is not None
            else None}


def environment() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}


def stores(iterator: Any) -> dict[str, dict[str, Any]]:
    """The token stores behind a data iterator (duck-typed: `iterator.data` of the mixture
    pipeline, `phi4_jax.data.pipeline.MixtureData`); {} for one without stores (synthetic)."""
    data = getattr(iterator, "data", None)
    found = getattr(data, "stores", None)
    mixture = getattr(data, "mixture", None)
    if not found or mixture is None:
        return {}
    return {s.name: _store_entry(st.path, st.manifest)
            for s, st in zip(mixture.sources, found)}


def _store_entry(path: str, manifest: Any) -> dict[str, Any]:
    return {"path": os.path.abspath(path) if "://" not in path else path,
            "fingerprint": manifest.fingerprint, "num_tokens": manifest.num_tokens,
            "num_documents": manifest.num_documents}


def _file_entry(path: str) -> dict[str, Any]:
    if path.startswith("gs://"):
        return gcs_object(path)
    if "://" in path:
        return {"url": path}
    manifest = os.path.join(path, "manifest.json")
    if os.path.isfile(manifest):  # a token store: its manifest's fingerprint (docs/data.md)
        with open(manifest, encoding="utf-8") as f:
            fields = json.load(f)
        return {"kind": "token_store", "path": os.path.abspath(path),
                **{k: fields.get(k) for k in ("fingerprint", "num_tokens", "num_documents")}}
    if os.path.isdir(path):
        return directory(path)
    if not os.path.exists(path):
        return {"path": os.path.abspath(path), "error": "missing"}
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path),
            "sha256": sha256_file(path)}


def directory(path: str) -> dict[str, Any]:
    """A digest of a directory: every member's relative path and size, and the content of the
    members up to DIR_CONTENT_BYTES (checkpoint metadata, manifests, checksums)."""
    h, count, total = hashlib.sha256(), 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            size = os.path.getsize(full)
            rel = os.path.relpath(full, path)
            h.update(f"{rel}\0{size}\0".encode())
            if size <= DIR_CONTENT_BYTES:
                h.update(sha256_file(full).encode())
            count, total = count + 1, total + size
            if count >= DIR_FILE_LIMIT:
                return {"path": os.path.abspath(path), "kind": "directory", "files": count,
                        "bytes": total, "listing_sha256": h.hexdigest(), "truncated": True}
    return {"path": os.path.abspath(path), "kind": "directory", "files": count, "bytes": total,
            "listing_sha256": h.hexdigest()}


def gcs_object(url: str) -> dict[str, Any]:
    """URL, generation and checksums of a gs:// object (google-cloud-storage, when installed);
    a prefix (a checkpoint directory) or an unreachable object records the URL only."""
    entry: dict[str, Any] = {"url": url, "generation": None}
    try:
        from google.cloud import storage
    except ImportError:
        return entry | {"error": "google-cloud-storage is not installed"}
    bucket, _, key = url[len("gs://"):].partition("/")
    try:
        blob = storage.Client().bucket(bucket).get_blob(key)
    except Exception as e:  # noqa: BLE001 - credentials, network: the record says why
        return entry | {"error": f"{type(e).__name__}: {e}"}
    if blob is None:
        return entry | {"kind": "prefix or missing"}
    return entry | {"generation": str(blob.generation), "bytes": blob.size,
                    "md5": blob.md5_hash, "crc32c": blob.crc32c}


def files(paths: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """Input files by the path given: local files hashed, directories digested, globs expanded
    (up to GLOB_LIMIT files), gs:// objects by URL and generation. None entries are skipped;
    a comma-separated value is several paths."""
    out: dict[str, dict[str, Any]] = {}
    for given in paths:
        for path in filter(None, (p.strip() for p in str(given or "").split(","))):
            if "://" not in path and glob.has_magic(path):
                matches = sorted(glob.glob(path, recursive=True))
                for match in matches[:GLOB_LIMIT]:
                    out[match] = _file_entry(match)
                if len(matches) > GLOB_LIMIT:
                    out[path] = {"glob": path, "files": len(matches), "truncated": True}
                continue
            try:
                out[path] = _file_entry(path)
            except OSError as e:
                out[path] = {"path": path, "error": str(e)}
    return out


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted.path: leaf}; an empty mapping is a leaf ({})."""
    if isinstance(config, Mapping) and config:
        out: dict[str, Any] = {}
        for key in sorted(config, key=str):
            out.update(flatten(config[key], f"{prefix}{key}."))
        return out
    return {prefix[:-1]: config} if prefix else {}


def seeds(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(config).items()
            if k.rsplit(".", 1)[-1] == "seed" or k.endswith("_seed")}


# Config fields of a training run that name input files or checkpoints (comma-separated lists
# allowed); a data.mixture naming a file is hashed too (registered names are code).
INPUT_KEYS = ("train.init_from", "train.reference_from", "dpo.pairs")


def config_inputs(config: Mapping[str, Any]) -> list[str]:
    flat = flatten(config)
    paths = [flat.get(k) for k in INPUT_KEYS if isinstance(flat.get(k), str)]
    mixture = flat.get("data.mixture")
    if isinstance(mixture, str) and (mixture.endswith(".py") or os.sep in mixture):
        paths.append(mixture)
    return [p for p in paths if p]
