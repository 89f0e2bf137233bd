"""The quality classifier: a small head over frozen mean-pooled embeddings, and fastText.

    embedder = Embedder.from_gguf(smollm2_path())           # or Embedder(model, encode)
    X = embedder.embed(texts)                                # [N, D] float32
    head = train_head(X, scores, kind="linear")              # optax; regression on 0-5
    labels = head.labels(X)                                  # edu_label of each prediction
    ft = FastTextClassifier.train(texts, labels)             # the peer

Embeddings: the model's final-norm hidden states (`Transformer.hidden`) averaged over the
document's tokens (the first `max_tokens`), in fixed [batch_size, max_tokens] blocks so one
compiled program serves every batch. Head: features standardized with the training set's mean
and deviation, then a linear layer (or one hidden layer of 64 with GELU) regressing the 0-5
score with mean squared error (FineWeb-Edu's classifier is a regression head too), AdamW,
full-batch steps; its prediction is turned into a label by edu.edu_label.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from phi4_jax.curate.edu import edu_label


class Embedder:
    """Mean-pooled final hidden states of a phi4_jax Transformer."""

    def __init__(self, model, encode: Callable[[str], list[int]], *, max_tokens: int = 128,
                 batch_size: int = 16):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        self.encode, self.max_tokens, self.batch_size = encode, max_tokens, batch_size
        graphdef, state = nnx.split(model)
        self.state = state

        def pooled(state, tokens, segments):
            hidden = nnx.merge(graphdef, state).hidden(tokens, segment_ids=segments)
            mask = (segments > 0).astype(jnp.float32)[..., None]
            total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
            return total / jnp.maximum(jnp.sum(mask, axis=1), 1.0)

        self._pooled = jax.jit(pooled)
        self.dim = int(model.config.embed_dim) if hasattr(model.config, "embed_dim") else None

    @classmethod
    def from_gguf(cls, path: str, **kwargs) -> Embedder:
        """A GGUF model (e.g. SmolLM2-135M: convert.gguf.smollm2_path()) and its tokenizer."""
        from phi4_jax.convert.gguf import GGUFTokenizer, load_gguf

        return cls(load_gguf(path), GGUFTokenizer(path).encode, **kwargs)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        b, t = self.batch_size, self.max_tokens
        for start in range(0, len(texts), b):
            chunk = texts[start:start + b]
            tokens = np.zeros((b, t), np.int32)
            segments = np.zeros((b, t), np.int32)
            for i, text in enumerate(chunk):
                ids = self.encode(text)[:t] or [0]
                tokens[i, :len(ids)] = ids
                segments[i, :len(ids)] = 1
            out.append(np.asarray(self._pooled(self.state, tokens, segments))[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclasses.dataclass
class Head:
    kind: str
    mean: np.ndarray
    std: np.ndarray
    params: dict

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float32) - self.mean) / self.std
        if self.kind == "mlp":
            h = z @ self.params["w1"] + self.params["b1"]
            h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))  # GELU (tanh)
            return (h @ self.params["w2"] + self.params["b2"])[:, 0]
        return (z @ self.params["w"] + self.params["b"])[:, 0]

    def labels(self, x: np.ndarray) -> list[int]:
        return [edu_label(s) for s in self.predict(x)]

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        np.savez(os.path.join(folder, "head.npz"), mean=self.mean, std=self.std,
                 **{f"p_{k}": v for k, v in self.params.items()})
        with open(os.path.join(folder, "head.json"), "w", encoding="utf-8") as f:
            json.dump({"kind": self.kind}, f)

    @classmethod
    def load(cls, folder: str) -> Head:
        with open(os.path.join(folder, "head.json"), encoding="utf-8") as f:
            kind = json.load(f)["kind"]
        z = np.load(os.path.join(folder, "head.npz"))
        return cls(kind, z["mean"], z["std"],
                   {k[2:]: z[k] for k in z.files if k.startswith("p_")})


def train_head(x: np.ndarray, scores: Sequence[float], *, kind: str = "linear",
               steps: int = 500, lr: float = 1e-2, weight_decay: float = 1e-3,
               hidden: int = 64, seed: int = 0) -> Head:
    """Fits the head by full-batch AdamW on mean squared error (module docstring)."""
    import jax
    import jax.numpy as jnp
    import optax

    if kind not in ("linear", "mlp"):
        raise ValueError(f"head kind {kind!r}: linear or mlp")
    x = np.asarray(x, np.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    z, y = jnp.asarray((x - mean) / std), jnp.asarray(np.asarray(scores, np.float32))
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    d = x.shape[1]
    if kind == "linear":
        params = {"w": jnp.zeros((d, 1)), "b": jnp.full((1,), float(np.mean(scores)))}
    else:
        params = {"w1": jax.random.normal(k1, (d, hidden)) / np.sqrt(d),
                  "b1": jnp.zeros((hidden,)),
                  "w2": jax.random.normal(k2, (hidden, 1)) / np.sqrt(hidden),
                  "b2": jnp.full((1,), float(np.mean(scores)))}

    def forward(p, z):
        if kind == "mlp":
            return (jax.nn.gelu(z @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[:, 0]
        return (z @ p["w"] + p["b"])[:, 0]

    opt = optax.adamw(lr, weight_decay=weight_decay)

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((forward(p, z) - y) ** 2))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    state = opt.init(params)
    for _ in range(steps):
        params, state, _ = step(params, state)
    return Head(kind, mean, std, {k: np.asarray(v) for k, v in params.items()})


def _one_line(text: str) -> str:
    return " ".join(text.split())


class FastTextClassifier:
    """fastText supervised classification over the labels 0-5 (the throughput peer)."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[int], *, epoch: int = 25,
              lr: float = 0.5, word_ngrams: int = 2, dim: int = 64, seed: int = 0
              ) -> FastTextClassifier:
        import fasttext

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False,
                                         encoding="utf-8") as f:
            for text, label in zip(texts, labels):
                f.write(f"__label__{int(label)} {_one_line(text)}\n")
        try:
            model = fasttext.train_supervised(input=f.name, epoch=epoch, lr=lr, dim=dim,
                                              wordNgrams=word_ngrams, seed=seed, thread=1,
                                              verbose=0)
        finally:
            os.unlink(f.name)
        return cls(model)

    def labels(self, texts: Sequence[str]) -> list[int]:
        found, _ = self.model.predict([_one_line(t) for t in texts])
        return [int(f[0].removeprefix("__label__")) for f in found]
