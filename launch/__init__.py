"""Process launchers: local devices (local.py); TPU pods and dry-run compiles (tpu.py); the batch
planner that fits an experiment's global batch to a TPU topology (planner.py)."""
