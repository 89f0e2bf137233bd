"""Orbax checkpoints: train state, data iterator state and run metadata saved together, sealed
with checksums.

Layout (one directory per saved step; orbax writes to a temporary name and renames when the
save is complete, so a step directory only exists once all of it is on disk):

    WORKDIR/checkpoints/
      STEP/
        state/                  TrainState (params, opt_state, step, rng, counters, frozen),
                                sharded arrays (OCDBT), written asynchronously
        data/process_I-of-N.json  each host's data iterator state
        meta/metadata           JSON: step, experiment config, wall time
        checksums.json          size and CRC-32 of every file above

Sealing (phi4_jax/train/seal.py): once every host's files of a step are written, and before
orbax commits the step (the rename), process 0 reads them back and writes checksums.json
(orbax's own checks cover only the zarr3 shard index, not the data): a committed step always
carries its checksums.

Restore walks the steps newest first; a step whose files do not match its checksums, or that
orbax fails to restore, is reported in one line (`checkpoint step N is corrupt: REASON;
restoring step M`) and the previous one is used; the bad step is then renamed STEP.corrupt (kept
for inspection, out of the way of the run's next save of that step). When no step restores at
all, nothing is moved and the run stops with an error. A step without checksums.json (saved
before sealing existed) is restored unverified.

A save that fails for lack of space raises `WorkdirError` naming the step and the last good
checkpoint (orbax removes old steps only after a newer one committed, so those stay intact) and
removes the partial step; orbax's own error logs for it, and tensorstore's tracebacks of its
late writes, are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import re
from typing import Any

import jax
import jax.experimental.multihost_utils as multihost
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from phi4_jax.train import seal as seal_lib
from phi4_jax.train.seal import MANIFEST, disk_full, seal, verify
from phi4_jax.train.state import TrainState
from phi4_jax.train.workdir import WorkdirError

__all__ = ["MANIFEST", "Checkpointer", "DataStateHandler", "HostCountError", "disk_full",
           "json_state", "no_space_message", "restore_params", "seal", "set_json_state",
           "step_dirs", "verify"]

log = logging.getLogger(__name__)


class HostCountError(RuntimeError):
    """A checkpoint's per-host data states need the process count they were saved with."""


class DataStateHandler(ocp.CheckpointHandler):
    """Each host writes its own iterator state (JSON) as process_I-of-N.json."""

    def save(self, directory: epath.Path, args: DataStateSave) -> None:
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        (epath.Path(directory) / name).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: DataStateRestore | None = None) -> Any:
        """This process's saved state; from a run with another process count, the state every
        process saved, when they all saved the same one (the data pipeline's state is a global
        step, host-count independent); else HostCountError says which count to resume with."""
        directory = epath.Path(directory)
        path = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if path.exists():
            return json.loads(path.read_text())
        saved = {}
        for p in directory.glob("process_*-of-*.json"):
            found = re.fullmatch(r"process_(\d+)-of-(\d+)\.json", p.name)
            if found:
                saved[int(found[1]), int(found[2])] = p
        counts = {n for _, n in saved}
        if len(counts) != 1 or set(saved) != {(i, n) for n in counts for i in range(n)}:
            raise FileNotFoundError(f"{path} is missing and {directory} holds no complete data "
                                    f"state from another process count ({sorted(saved)})")
        (count,) = counts
        states = [json.loads(saved[i, count].read_text()) for i in range(count)]
        if any(state != states[0] for state in states[1:]):
            raise HostCountError(
                f"resume with exactly {count} processes: this checkpoint's data iterator state "
                f"was saved by {count} processes and differs between them, so this run's "
                f"{jax.process_count()} processes cannot restore it ({directory}); or start "
                "a new workdir with train.init_from pointing here")
        log.info("data state of %s: saved by %d processes, restored on %d (the same state on "
                 "every host)", directory, count, jax.process_count())
        return states[0]

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def json_state(iterator: Any) -> Any:
    """The iterator's state as JSON-able data (Grain DataLoader iterators give bytes)."""
    state = iterator.get_state()
    return {"__bytes__": state.decode()} if isinstance(state, bytes) else state


def set_json_state(iterator: Any, state: Any) -> None:
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
        state = state["__bytes__"].encode()
    iterator.set_state(state)


def _abstract(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


class Checkpointer:
    """Saves and restores (TrainState, data state, metadata) under `directory`.

    `seal_seconds` holds the time each save spent on its checksums (in orbax's background
    thread, on process 0).
    """

    def __init__(self, directory: str, *, keep: int, async_save: bool = True):
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        self.async_save = async_save
        self.seal_seconds: list[float] = []
        self._saving: int | None = None  # the step of the newest save started
        seal_lib.quiet_failed_saves()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            # Always orbax's asynchronous checkpointer: its commit callback seals the step
            # before the rename. A synchronous save (async_save=False) waits for it.
            enable_async_checkpointing=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._seal),
            cleanup_tmp_directories=True, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _seal(self) -> None:
        """orbax's post-finalization callback: every host's files of the step are written, the
        temporary directory is not yet renamed (on GCS: the step directory, not yet marked)."""
        root = epath.Path(self.directory)
        pending = sorted(root.glob(f"{self._saving}.orbax-checkpoint-tmp*"))
        self.seal_seconds.append(seal(pending[-1] if pending else root / str(self._saving)))

    def save(self, step: int, state: TrainState, data_state: Any, meta: dict[str, Any]) -> bool:
        """Starts saving `step` (returns once device arrays are copied to host; with
        async_save=False once it is committed). A previous save's failure surfaces here."""
        if step in self.manager.all_steps():
            return False
        self.wait()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state._asdict()),
                                  data=DataStateSave(data_state),
                                  meta=ocp.args.JsonSave({"step": step, **meta}))
        self._saving = step
        started = self._guard(lambda: self.manager.save(step, args=args, force=True), step)
        if not self.async_save:
            self.wait()
        return started

    def wait(self) -> None:
        """Blocks until the save in flight is committed (raises its failure)."""
        if self.manager is not None:
            self._guard(self.manager.wait_until_finished, self._saving)

    def last_good(self, but: int | None = None) -> int | None:
        """The newest committed step (other than `but`), None if there is none."""
        self.manager.reload()
        steps = [s for s in self.steps() if s != but]
        return steps[-1] if steps else None

    def _guard(self, call: Any, step: int | None) -> Any:
        """call(); a failure for lack of space becomes one WorkdirError, raised outside the
        except block: orbax's failed save (its threads' errors, their pending coroutines) is
        then collected at once, not at interpreter exit, where it prints hundreds of lines of
        tracebacks. The Checkpointer is closed after it."""
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - re-raised unless out of space
            if not disk_full(err):
                raise
        message = no_space_message(self, f"saving step {step}", but=step)
        self._close_manager()
        if jax.process_index() == 0:  # the partial step: out of the way, and its space back
            for partial in epath.Path(self.directory).glob(f"{step}.orbax-checkpoint-tmp*"):
                partial.rmtree(missing_ok=True)
        gc.collect()
        raise WorkdirError(message)

    def restore(self, abstract: TrainState, shardings: TrainState
                ) -> tuple[TrainState, Any, int] | None:
        """The newest restorable (state, data state, step), or None when there is no step.

        A step whose checksums do not match, or that orbax cannot restore, is reported in one
        line and set aside once an older one restored. If none restores, nothing is moved and a
        WorkdirError says so (a changed model or optimizer looks like this too).
        """
        target = _abstract(abstract._asdict(), shardings._asdict())
        failed: list[tuple[int, str]] = []
        for step in reversed(self.steps()):
            problem = self._verified(step)
            if problem is None:
                try:
                    with seal_lib.orbax_quiet():
                        out = self.manager.restore(step, args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(target), data=DataStateRestore()))
                except HostCountError:
                    raise  # the step is fine: the process count is not (never set it aside)
                except Exception as err:  # noqa: BLE001 - any failure means "not restorable"
                    problem = (f"orbax could not restore it ({type(err).__name__}: "
                               f"{(str(err).splitlines() or [''])[0][:300]})")
            if problem is not None:
                failed.append((step, problem))
                continue
            for bad, why in failed:
                path = epath.Path(self.directory) / str(bad)
                log.warning("checkpoint step %d is corrupt (%s): %s; restoring step %d (step %d "
                            "kept as %s.corrupt)", bad, path, why, step, bad, path)
                self._set_aside(bad)
            self.manager.reload()
            return TrainState(**out["state"]), out["data"], step
        if failed:
            reasons = "; ".join(f"step {s}: {why}" for s, why in failed)
            raise WorkdirError(
                f"no checkpoint in {self.directory} could be restored ({reasons}); if the "
                "model, optimizer or mesh changed, use a new workdir, or train.init_from to "
                "start from these parameters")
        return None

    def _verified(self, step: int) -> str | None:
        """verify() on process 0, its verdict shared with every process."""
        problem = None
        if jax.process_index() == 0:
            problem = verify(epath.Path(self.directory) / str(step))
        if jax.process_count() > 1:
            bad = multihost.broadcast_one_to_all(np.int32(problem is not None))
            if bad and problem is None:
                problem = f"its files do not match {MANIFEST} (checked on process 0)"
        return problem

    def _set_aside(self, step: int) -> None:
        path = epath.Path(self.directory) / str(step)
        if jax.process_index() == 0:
            path.rename(path.parent / f"{step}.corrupt")
        multihost.sync_global_devices(f"phi4_jax_set_aside_{step}")

    def close(self) -> None:
        """Waits for the save in flight (raising its failure), then closes orbax's threads."""
        try:
            self.wait()
        finally:
            self._close_manager()

    def _close_manager(self) -> None:
        manager, self.manager = self.manager, None
        if manager is None:
            return
        try:
            manager.close()
        except Exception:  # noqa: BLE001 - a failed save raises again: still stop its threads
            with contextlib.suppress(Exception):
                manager._checkpointer.close()  # noqa: SLF001


def no_space_message(checkpoints: Checkpointer, doing: str, but: int | None = None) -> str:
    """`DIR: no space left on device while DOING; the last good checkpoint is ...`."""
    good = checkpoints.last_good(but=but)
    if good is None:
        where = "no checkpoint was saved yet"
    else:
        path = epath.Path(checkpoints.directory) / str(good)
        size = ""
        with contextlib.suppress(OSError, ValueError, KeyError):
            files = json.loads((path / MANIFEST).read_text())["files"]
            size = f", {sum(f['size'] for f in files.values()) / 2**20:.1f} MiB"
        where = (f"the last good checkpoint is step {good} ({path}{size}, intact): free space or "
                 f"lower train.keep, then rerun the same command to resume from it")
    return (f"{os.path.dirname(checkpoints.directory)}: no space left on device while "
            f"{doing}; {where}")


def step_dirs(path: str) -> list[epath.Path]:
    """Step directories, newest first, from a workdir, its checkpoints/ or one step directory."""
    p = epath.Path(path if "://" in str(path) else os.path.abspath(path))  # orbax: absolute
    if (p / "state").exists():
        return [p]
    root = p / "checkpoints" if (p / "checkpoints").exists() else p
    steps = sorted((int(c.name) for c in root.iterdir() if c.name.isdigit()), reverse=True) \
        if root.exists() else []
    return [root / str(s) for s in steps]


def restore_params(path: str, abstract_params: Any, shardings: Any) -> Any:
    """Only the parameters of another run's newest good checkpoint (`train.init_from`)."""
    target = {"params": _abstract(abstract_params, shardings)}
    args = ocp.args.PyTreeRestore(
        item=target, partial_restore=True,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target))
    with ocp.PyTreeCheckpointer() as ckptr:
        for step_dir in step_dirs(path):
            problem = verify(step_dir)
            if problem is None:
                try:
                    with seal_lib.orbax_quiet():
                        restored = ckptr.restore(step_dir / "state", args=args)
                except Exception as err:  # noqa: BLE001
                    problem = f"orbax could not restore it ({type(err).__name__})"
            if problem is not None:
                log.warning("train.init_from: %s is corrupt: %s; trying the previous one",
                            step_dir, problem)
                continue
            log.info("initialized parameters from %s", step_dir)
            return restored["params"]
    raise FileNotFoundError(f"train.init_from={path!r}: no restorable checkpoint there")
