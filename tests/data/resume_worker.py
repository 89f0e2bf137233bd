"""Restores a data iterator from an orbax checkpoint in a fresh process (used by test_resume).

    python -m tests.data.resume_worker CKPT_DIR DATA_ROOT OUT.npz NUM_BATCHES PROCESS_COUNT
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from phi4_jax.data import pipeline  # noqa: E402
from tests.data.conftest import toy_mixture  # noqa: E402


def main(ckpt_dir: str, data_root: str, out: str, num_batches: int, hosts: int) -> None:
    its = [pipeline.build_iterator(toy_mixture(), seq_len=64, global_batch_size=8,
                                   data_root=data_root, process_index=h, process_count=hosts)
           for h in range(hosts)]
    manager = ocp.CheckpointManager(ckpt_dir, item_names=("data",))
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    for it in its:
        it.set_state(dict(restored["data"]))
    batches = [{k: np.concatenate([b[k] for b in host]) for k in host[0]}
               for host in zip(*[[next(it) for _ in range(num_batches)] for it in its])]
    np.savez(out, **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
