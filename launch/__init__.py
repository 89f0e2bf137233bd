"""Process launchers: local devices (local.py); TPU pods and dry-run compiles (tpu.py)."""
