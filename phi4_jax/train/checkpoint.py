"""Orbax checkpoints: train state, data iterator state and run metadata saved together.

Layout (one directory per saved step; orbax writes to a temporary name and renames when the
save is complete, so a step directory only exists once all of it is on disk):

    WORKDIR/checkpoints/
      STEP/
        state/                  TrainState (params, opt_state, step, rng, counters, frozen),
                                sharded arrays (OCDBT), written asynchronously
        data/process_I-of-N.json  each host's data iterator state
        meta/metadata           JSON: step, experiment config, wall time

Restore walks the steps newest first; a step that fails to restore (truncated or corrupted
files) is skipped with a warning naming its directory and the previous one is used; the bad
step is then renamed STEP.corrupt (kept for inspection, out of the way of the run's next save of
that step). When no step restores at all, nothing is moved and the run stops with an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any

import jax
import jax.experimental.multihost_utils
import orbax.checkpoint as ocp
from etils import epath

from phi4_jax.train.state import TrainState

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
    """Saves and restores (TrainState, data state, metadata) under `directory`."""

    def __init__(self, directory: str, *, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: TrainState, data_state: Any, meta: dict[str, Any]) -> bool:
        """Starts saving `step` (returns once device arrays are copied to host)."""
        if step in self.manager.all_steps():
            return False
        args = ocp.args.Composite(state=ocp.args.StandardSave(state._asdict()),
                                  data=DataStateSave(data_state),
                                  meta=ocp.args.JsonSave({"step": step, **meta}))
        return self.manager.save(step, args=args, force=True)

    def restore(self, abstract: TrainState, shardings: TrainState
                ) -> tuple[TrainState, Any, int] | None:
        """The newest restorable (state, data state, step), or None when there is no step.

        Steps newer than the one restored are set aside as corrupt. If no step restores, nothing
        is moved and a RuntimeError says so (a changed model or optimizer looks like this too).
        """
        target = _abstract(abstract._asdict(), shardings._asdict())
        failed: list[tuple[int, Exception]] = []
        for step in reversed(self.steps()):
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), data=DataStateRestore()))
            except HostCountError:
                raise  # the step is fine: the process count is not (never set it aside)
            except Exception as err:  # noqa: BLE001 - any failure means "not restorable"
                log.warning("checkpoint %s could not be restored (%s: %s); trying the previous "
                            "one", os.path.join(self.directory, str(step)), type(err).__name__,
                            (str(err).splitlines() or [""])[0][:300])
                failed.append((step, err))
                continue
            for bad, _ in failed:
                self._set_aside(bad)
            self.manager.reload()
            return TrainState(**out["state"]), out["data"], step
        if failed:
            step, err = failed[0]
            raise RuntimeError(
                f"no checkpoint in {self.directory} could be restored (newest: step {step}, "
                f"{type(err).__name__}); if the model, optimizer or mesh changed, use a new "
                "workdir, or train.init_from to start from these parameters") from err
        return None

    def _set_aside(self, step: int) -> None:
        path = os.path.join(self.directory, str(step))
        log.warning("moved unrestorable checkpoint %s to %s.corrupt", path, path)
        if jax.process_index() == 0:
            os.replace(path, f"{path}.corrupt")
        jax.experimental.multihost_utils.sync_global_devices(f"phi4_jax_set_aside_{step}")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


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
            try:
                restored = ckptr.restore(step_dir / "state", args=args)
            except Exception as err:  # noqa: BLE001
                log.warning("train.init_from: %s could not be restored (%s); trying the "
                            "previous one", step_dir, type(err).__name__)
                continue
            log.info("initialized parameters from %s", step_dir)
            return restored["params"]
    raise FileNotFoundError(f"train.init_from={path!r}: no restorable checkpoint there")
