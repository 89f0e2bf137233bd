"""The embedded corpus: real text from the Python installation in five roles, no download.

    from phi4_jax.data.embedded import embedded_mixture
    mixture = embedded_mixture("/tmp/phi4_data", table, reference_tokens=10e12)  # ~2 s once
    it = build_iterator(mixture, seq_len=512, global_batch_size=8, num_steps=...)

`table` maps each role to (fraction of training tokens, unique tokens at reference_tokens); the
caller gives it (data_mixtures/embedded.py passes paper Table 5). The five roles, each a token
store:

    web           docstrings of the standard library (module, class and function prose)
    web_rewrites  the same docstrings rewritten by a fixed template into question / answer /
                  key-point form (the recipe rewrites web pages with an LLM; a template here)
    synthetic     generated arithmetic word problems with worked solutions (arithmetic.py)
    code          standard library source files
    acquired      the Python reference manual text shipped as pydoc_data.topics, and LICENSE.txt

Each role's store holds its unique tokens x budget / reference_tokens (until its material runs
out) and the weights are the table's fractions, so a budget repeats each role about as often as
the table does at reference_tokens (Table 5: 1.2 / 5.2 / 13.8 / 2.4 / 1.7 epochs). Documents
end with <|endoftext|>.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping

import numpy as np

from phi4_jax.data.arithmetic import word_problems
from phi4_jax.data.mixture import Mixture, Source, Stage
from phi4_jax.data.store import MANIFEST, Manifest, write_store
from phi4_jax.data.tokenizer import TOKENIZER_ID, tokenize_documents

EMBEDDED_VERSION = 1
DEFAULT_BUDGET = 1_500_000  # tokens; unique tokens per role = the table's x budget / reference
ROLES = ("web", "web_rewrites", "synthetic", "code", "acquired")
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
_DEF_DOC = re.compile(r'^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)[^\n]*:[ \t]*\n'
                      r'[ \t]*[rRuU]?("""|\'\'\')(.*?)\2', re.M | re.S)
_MODULE_DOC = re.compile(r'\A(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*[rRuU]?("""|\'\'\')(.*?)\1', re.S)
log = logging.getLogger(__name__)


def stdlib_files() -> list[str]:
    """The standard library's .py files (no tests, no site-packages), sorted."""
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return files


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, sysconfig.get_paths()["stdlib"])
    return rel[:-3].replace(os.sep, ".").removesuffix(".__init__")


def docstrings(sources: dict[str, str], min_chars: int = 200) -> list[tuple[str, str]]:
    """(qualified name, cleaned docstring) for prose-sized module/class/function docstrings."""
    out = []
    for path, text in sources.items():
        module = _module_name(path)
        found = _MODULE_DOC.match(text)
        if found:
            out.append((module, found.group(2)))
        out += [(f"{module}.{m.group(1)}", m.group(3)) for m in _DEF_DOC.finditer(text)]
    cleaned = [(name, inspect.cleandoc(doc)) for name, doc in out]
    return [(name, doc) for name, doc in cleaned if len(doc) >= min_chars]


def rewrite(name: str, doc: str) -> str:
    """A fixed-template rewrite of a docstring into question, answer and key points."""
    paragraphs = [p.strip() for p in doc.split("\n\n") if p.strip()]
    answer = " ".join(paragraphs[0].split())
    points = [" ".join(p.split()) for p in paragraphs[1:4]]
    lines = [f"Question: In the Python standard library, what does `{name}` do?",
             f"Answer: {answer}"]
    if points:
        lines += ["", "Key points:"] + [f"- {p}" for p in points]
    return "\n".join(lines)


def _mix_order(items: list, salt: str) -> list:
    """A deterministic order that interleaves modules (crc32 of the item's key)."""
    return sorted(items, key=lambda it: zlib.crc32(f"{salt}:{it[0]}".encode()))


def _take(texts: Iterator[str], target_tokens: int, chars_per_token: float = 3.0,
          max_batches: int = 20) -> list[list[int]]:
    """Tokenizes texts in order, keeping a document only if it does not overshoot the target by
    more than 0.5%, until within 0.5% below it (or the texts or max_batches run out)."""
    docs, total = [], 0
    for _ in range(max_batches):
        if total >= 0.995 * target_tokens:
            break
        batch, estimate = [], 0.0
        for text in texts:  # only tokenize about what is still missing
            batch.append(text)
            estimate += len(text) / chars_per_token
            if estimate >= 1.2 * (target_tokens - total) or len(batch) >= 512:
                break
        if not batch:
            break
        for ids in tokenize_documents(batch):
            if total + len(ids) <= 1.005 * target_tokens or not docs:
                docs.append(ids)
                total += len(ids)
    return docs


def _role_texts(role: str, sources: dict[str, str], docs: list[tuple[str, str]]
                ) -> Iterator[str]:
    if role == "web":
        return (f"{name}\n\n{doc}" for name, doc in _mix_order(docs, "web"))
    if role == "web_rewrites":
        return (rewrite(name, doc) for name, doc in _mix_order(docs, "rewrite"))
    if role == "synthetic":
        return word_problems(seed=EMBEDDED_VERSION)
    if role == "code":
        return (text for _, text in _mix_order(list(sources.items()), "code"))
    if role == "acquired":
        import pydoc_data.topics  # noqa: PLC0415

        license_file = os.path.join(sysconfig.get_paths()["stdlib"], "LICENSE.txt")
        texts = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
        if os.path.exists(license_file):
            with open(license_file, encoding="utf-8") as f:
                texts.append(f.read())
        return iter(t for t in texts if t.strip())
    raise ValueError(f"unknown role {role!r}")


def _cache_key(targets: Mapping[str, int]) -> str:
    blob = json.dumps([EMBEDDED_VERSION, sorted(targets.items()), TOKENIZER_ID, sys.version,
                       sysconfig.get_paths()["stdlib"]])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def role_targets(table: Mapping[str, tuple[float, float]], reference_tokens: float,
                 budget_tokens: int) -> dict[str, int]:
    """Tokens per role store: unique tokens x budget / reference_tokens (checks the roles)."""
    if set(table) != set(ROLES):
        raise ValueError(f"the embedded corpus has roles {list(ROLES)}; the table has "
                         f"{list(table)}")
    return {role: int(unique * budget_tokens / reference_tokens)
            for role, (_, unique) in table.items()}


def build(directory: str, targets: Mapping[str, int]) -> dict[str, Manifest]:
    """Writes one store per role of `targets` (role -> tokens) into `directory` (no caching;
    see materialize)."""
    start = time.perf_counter()
    sources = {}
    for path in stdlib_files():
        try:
            with open(path, encoding="utf-8") as f:
                sources[path] = f.read()
        except (OSError, UnicodeDecodeError):
            continue  # a broken file in someone's install must not stop the build
    docs = docstrings(sources)
    manifests = {}
    for role, target in targets.items():
        token_docs = _take(_role_texts(role, sources, docs), target)
        manifests[role] = write_store(
            os.path.join(directory, role), role, (np.asarray(d, np.uint32) for d in token_docs),
            info={"embedded_version": EMBEDDED_VERSION, "target_tokens": target,
                  "python": sys.version.split()[0]})
    log.info("built the embedded corpus (%s tokens) in %.1fs",
             sum(m.num_tokens for m in manifests.values()), time.perf_counter() - start)
    return manifests


def materialize(cache_dir: str, targets: Mapping[str, int]) -> dict[str, str]:
    """Builds the role stores under cache_dir once (idempotent, and safe against concurrent
    builders: the whole directory is renamed into place) and returns role -> store path,
    cache_dir/embedded-KEY/ROLE."""
    final = os.path.join(os.path.abspath(cache_dir), f"embedded-{_cache_key(targets)}")
    if not all(os.path.exists(os.path.join(final, r, MANIFEST)) for r in targets):
        os.makedirs(cache_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".embedded-build-", dir=cache_dir)
        try:
            build(tmp, targets)
            if os.path.exists(final):  # a partial or concurrent build: keep one complete copy
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not all(os.path.exists(os.path.join(final, r, MANIFEST)) for r in targets):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {r: os.path.join(final, r) for r in targets}


def embedded_mixture(cache_dir: str, table: Mapping[str, tuple[float, float]], *,
                     reference_tokens: float, budget_tokens: int = DEFAULT_BUDGET,
                     name: str = "embedded", description: str = "") -> Mixture:
    """The embedded corpus (built under cache_dir on first use) as a Mixture: the table's roles
    and fractions, total_tokens = budget_tokens, absolute store paths, unique tokens from the
    stores. table: role -> (fraction, unique tokens at reference_tokens)."""
    paths = materialize(cache_dir, role_targets(table, reference_tokens, budget_tokens))
    manifests = {r: Manifest.from_file(os.path.join(p, MANIFEST)) for r, p in paths.items()}
    return Mixture(
        name=name, total_tokens=float(budget_tokens),
        description=description or "offline: Python stdlib docstrings / rewrites / arithmetic / "
                                   "code / reference manual",
        sources=tuple(Source(r, paths[r], unique_tokens=manifests[r].num_tokens) for r in table),
        stages=(Stage({role: fraction for role, (fraction, _) in table.items()}),))
