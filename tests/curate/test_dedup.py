"""MinHash near-dedup: precision and recall against exact Jaccard on a planted set,
deterministic representatives, Beam = in process."""

from __future__ import annotations

import glob
import itertools
import json
import random
import subprocess
import sys

from phi4_jax.curate.minhash import MinHashConfig, jaccard, near_duplicates

VOCAB = [f"w{i}" for i in range(3000)]


def planted(n_base: int = 40, seed: int = 0, near_edits: int = 3,
            far_edits: int = 50) -> dict[str, str]:
    """Base documents of 150 random words; each gets a near copy (3 words changed: shingle
    Jaccard ~0.8) and a far copy (a third of the words changed: Jaccard < 0.2)."""
    rng = random.Random(seed)
    docs = {}
    for b in range(n_base):
        base = [rng.choice(VOCAB) for _ in range(150)]
        docs[f"d{b:03d}"] = " ".join(base)
        near = list(base)
        for i in rng.sample(range(150), near_edits):
            near[i] = rng.choice(VOCAB)
        docs[f"n{b:03d}"] = " ".join(near).upper()  # case does not matter
        far = list(base)
        for i in rng.sample(range(150), far_edits):
            far[i] = rng.choice(VOCAB)
        docs[f"f{b:03d}"] = " ".join(far)
    return docs


def test_precision_and_recall_against_exact_jaccard():
    docs = planted()
    clusters = near_duplicates(docs)
    predicted = {frozenset(p) for members in clusters.groups().values()
                 for p in itertools.combinations(members, 2)}
    exact = {frozenset((a, b)): jaccard(docs[a], docs[b])
             for a, b in itertools.combinations(sorted(docs), 2)}
    truth = {p for p, j in exact.items() if j >= 0.8}
    assert len(truth) == 40  # each base with its near copy
    recall = len(predicted & truth) / len(truth)
    precision = len(predicted & truth) / max(1, len(predicted))
    print(f"\nplanted near-duplicates: precision {precision:.3f}, recall {recall:.3f}, "
          f"{len(predicted)} predicted pairs, {len(truth)} true pairs (Jaccard >= 0.8)")
    assert recall >= 0.95 and precision >= 0.95


def test_representative_is_the_smallest_id_whatever_the_order():
    docs = planted(10, seed=1)
    first = near_duplicates(docs)
    items = list(docs.items())
    random.Random(3).shuffle(items)
    again = near_duplicates(items)
    assert first.root == again.root
    for rep, members in first.groups().items():
        assert rep == min(members)
    assert all(first.representative(f"d{b:03d}") == f"d{b:03d}" for b in range(10))
    assert first.representative("n004") == "d004"


def test_config_probability():
    c = MinHashConfig()
    assert c.num_perm == 112 and 0.92 < c.collision_probability(0.8) < 0.93


def _write(tmp_path, docs):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    return path


def test_cli_in_process(tmp_path):
    docs = planted(8, seed=2)
    path = _write(tmp_path, docs)
    out = tmp_path / "kept.jsonl"
    proc = subprocess.run([sys.executable, "-m", "phi4_jax.curate.dedup", f"--input={path}",
                           f"--output={out}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    kept = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert kept == [k for k in docs if not k.startswith("n")]
    clusters = [json.loads(x) for x in (tmp_path / "kept.clusters.jsonl").read_text().splitlines()]
    assert len(clusters) == 8 and clusters[0] == {"representative": "d000",
                                                  "members": ["d000", "n000"]}


def test_beam_equals_in_process(tmp_path):
    from phi4_jax.curate.dedup import dedup_files
    from phi4_jax.curate.dedup_beam import run_beam

    docs = planted(15, seed=4)
    docs.update({"x1": docs["d001"], "x0": docs["d001"] + " tail"})  # a cluster of 4
    path = _write(tmp_path, docs)
    clusters, _ = dedup_files([str(path)], str(tmp_path / "local.jsonl"))
    run_beam([str(path)], str(tmp_path / "beam"))
    def lines(pattern):
        out = []
        for f in sorted(glob.glob(str(tmp_path / pattern))):
            with open(f, encoding="utf-8") as fh:
                out += [json.loads(x) for x in fh]
        return out

    roots = {r["id"]: r["representative"] for r in lines("beam/clusters*")}
    kept = {r["id"] for r in lines("beam/kept*")}
    assert roots == clusters.root
    assert kept == {r["id"] for r in lines("local.jsonl")}
    assert clusters.groups()["d001"] == ["d001", "n001", "x0", "x1"]
