"""Run records: every work dir says what made it (WORKDIR/runs.jsonl, one record per launch).

    record = runs.start(run_config, workdir, mesh=mesh, data=iterator)   # the training loop
    runs.finish(record, step=step, metrics=last)
    runs.write_job_record(output_dir, job=PROG, argv=argv, config=vars(args), inputs=[...])
    python -m phi4_jax.runs show WORKDIR          # the records of a work dir
    python -m phi4_jax.runs diff WORKDIR_A WORKDIR_B   # what differs between two runs
    python -m launch.local --reproduce=WORKDIR[@N] --workdir=NEW [--strict]

Modules: record (the schema, start / finish / job records), collect (code, packages, topology,
inputs), history (runs.jsonl: append, update, select), diff, reproduce (the launchers'
--reproduce), tensorboard (the record as TensorBoard text and hparams). docs/launch.md ("Run
records") shows a real record.
"""

from phi4_jax.runs.history import RECORDS, RecordError, read, select
from phi4_jax.runs.record import SCHEMA, Record, finish, set_command, start, write_job_record

__all__ = ["RECORDS", "SCHEMA", "Record", "RecordError", "finish", "read", "select",
           "set_command", "start", "write_job_record"]
