"""Near-dedup on Apache Beam: signatures in a ParDo, band keys grouped, components joined.

    records | "Keys" >> FlatMap(band keys of one document)          (parallel, per document)
            | GroupByKey                                            (one bucket per band key)
            | "Edges" >> FlatMap(bucket_edges)                      (the smallest id to each other)
            | ToList | Map(clusters_from_edges)                     (one union-find)
    records filtered with the non-representatives as a side input

The signatures -- the work that grows with the corpus -- run in parallel on every worker; the
union-find runs on one worker over the edges only (one per document in a cluster of two or
more, so its memory is the duplicates, not the corpus) and gives each component its smallest
id, as the in-process path does (phi4_jax.curate.minhash): both give the same clusters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from phi4_jax import cli

cli.quiet_library_noise()

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from phi4_jax.curate.minhash import (  # noqa: E402
    DEFAULT,
    MinHashConfig,
    bucket_edges,
    clusters_from_edges,
    doc_band_keys,
)


class _Parse(beam.DoFn):
    """A JSONL line -> (id, text, line); a bad line is counted and dropped."""

    def __init__(self, text_field: str, id_field: str):
        self.text_field, self.id_field = text_field, id_field
        self.bad = beam.metrics.Metrics.counter("phi4_dedup", "bad_lines")

    def process(self, line):
        try:
            obj = json.loads(line)
            doc_id, text = str(obj[self.id_field]), obj[self.text_field]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError):
            self.bad.inc()
            return
        yield doc_id, text, line


def _keys(record, config: MinHashConfig):
    doc_id, text, _ = record
    return doc_band_keys(doc_id, text, config)


def _edges(bucket):
    _, members = bucket
    members = list(members)
    return bucket_edges(members) if len(members) > 1 else []


def _component_pairs(edges):
    return sorted(clusters_from_edges(edges).root.items())


def _kept(record, removed):
    return record[0] not in removed


def run_beam(inputs: Sequence[str], output_dir: str, config: MinHashConfig = DEFAULT, *,
             text_field: str = "text", id_field: str = "id",
             beam_args: Sequence[str] = ()) -> None:
    """Writes OUTPUT_DIR/kept-*.jsonl (the records kept, as input lines) and
    OUTPUT_DIR/clusters-*.jsonl ({"id", "representative"} of every document in a cluster)."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.insert(0, "--runner=FnApiRunner")
    os.makedirs(output_dir, exist_ok=True)
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        lines = p | "Files" >> beam.Create(list(inputs)) | "Read" >> beam.io.ReadAllFromText()
        records = lines | "Parse" >> beam.ParDo(_Parse(text_field, id_field))
        roots = (records
                 | "Keys" >> beam.FlatMap(_keys, config)
                 | "Buckets" >> beam.GroupByKey()
                 | "Edges" >> beam.FlatMap(_edges)
                 | "AllEdges" >> beam.combiners.ToList()
                 | "Components" >> beam.FlatMap(_component_pairs))
        removed = roots | "Removed" >> beam.Filter(lambda kv: kv[0] != kv[1])
        _ = (records
             | "Kept" >> beam.Filter(_kept, removed=beam.pvalue.AsDict(removed))
             | "Lines" >> beam.Map(lambda r: r[2])
             | "WriteKept" >> beam.io.WriteToText(os.path.join(output_dir, "kept"),
                                                  file_name_suffix=".jsonl"))
        _ = (roots
             | "ClusterJson" >> beam.Map(lambda kv: json.dumps({"id": kv[0],
                                                                "representative": kv[1]}))
             | "WriteClusters" >> beam.io.WriteToText(os.path.join(output_dir, "clusters"),
                                                      file_name_suffix=".jsonl"))
