"""The one mapping between our parameter tree and Hugging Face tensor names (and layouts).

Our tree (paths of `nnx.state(model, nnx.Param)`), HF Linear weights being [out, in]:

    embed/embedding        [V, D]        model.embed_tokens.weight            [V, D]
    blocks/attn_norm/scale [L, D]        model.layers.i.input_layernorm.weight
    blocks/attn/q          [L, D, N, H]  self_attn.qkv_proj rows [0, NH)  (Llama: q_proj)
    blocks/attn/k          [L, D, K, H]  self_attn.qkv_proj rows [NH, NH+KH)    (k_proj)
    blocks/attn/v          [L, D, K, H]  self_attn.qkv_proj rows [NH+KH, ...)   (v_proj)
    blocks/attn/o          [L, N, H, D]  self_attn.o_proj.weight              [D, NH]
    blocks/mlp_norm/scale  [L, D]        model.layers.i.post_attention_layernorm.weight
    blocks/mlp/gate        [L, D, F]     mlp.gate_up_proj rows [0, F)        (gate_proj)
    blocks/mlp/up          [L, D, F]     mlp.gate_up_proj rows [F, 2F)       (up_proj)
    blocks/mlp/down        [L, F, D]     mlp.down_proj.weight                 [D, F]
    final_norm/scale       [D]           model.norm.weight
    lm_head                [D, V]        lm_head.weight [V, D] (absent when embeddings are tied)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from phi4_jax.model.config import ModelConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class HFTensor:
    """One Hugging Face tensor: its name, shape, and where it lives in our tree."""

    name: str
    shape: tuple[int, ...]
    path: Path
    layer: int | None  # index into the stacked 'layers' axis, None for unstacked leaves


@dataclasses.dataclass(frozen=True)
class Group:
    """A set of HF tensors that together form one of our leaves (or one layer of it)."""

    path: Path
    layer: int | None
    tensors: tuple[HFTensor, ...]
    to_ours: Callable[[list[np.ndarray]], np.ndarray]
    to_hf: Callable[[np.ndarray], list[np.ndarray]]


def _t(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def groups(config: ModelConfig, architecture: str = "Phi3ForCausalLM") -> list[Group]:
    """Every HF tensor of `config`, grouped by the leaf (and layer) it forms, in file order."""
    d, n, k, h, f, v = (config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim,
                        config.mlp_dim, config.vocab_size)
    fused = architecture == "Phi3ForCausalLM"
    out: list[Group] = []

    def add(path: Path, layer: int | None, specs: list[tuple[str, tuple[int, ...]]],
            to_ours: Callable, to_hf: Callable) -> None:
        tensors = tuple(HFTensor(name, shape, path, layer) for name, shape in specs)
        out.append(Group(path, layer, tensors, to_ours, to_hf))

    identity = (lambda xs: xs[0], lambda a: [a])
    q_to = lambda w: _t(w).reshape(d, n, h)
    kv_to = lambda w: _t(w).reshape(d, k, h)
    qkv_rows = {"q": (0, n * h), "k": (n * h, n * h + k * h),
                "v": (n * h + k * h, n * h + 2 * k * h)}

    def split_qkv(xs: list[np.ndarray], part: str) -> np.ndarray:
        w = xs[0][qkv_rows[part][0]:qkv_rows[part][1]]
        return q_to(w) if part == "q" else kv_to(w)

    add(("embed", "embedding"), None, [("model.embed_tokens.weight", (v, d))], *identity)
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        add(("blocks", "attn_norm", "scale"), i, [(p + "input_layernorm.weight", (d,))],
            *identity)
        if fused:
            # q, k and v share one HF tensor; each leaf reads its rows. Writing is done by the
            # 'qkv' group below, which concatenates the three leaves.
            qkv = [(p + "self_attn.qkv_proj.weight", ((n + 2 * k) * h, d))]
            for part in ("q", "k", "v"):
                add(("blocks", "attn", part), i, qkv,
                    lambda xs, part=part: split_qkv(xs, part), None)
        else:
            add(("blocks", "attn", "q"), i, [(p + "self_attn.q_proj.weight", (n * h, d))],
                lambda xs: q_to(xs[0]), lambda a: [_t(a.reshape(d, n * h))])
            for part in ("k", "v"):
                add(("blocks", "attn", part), i,
                    [(p + f"self_attn.{part}_proj.weight", (k * h, d))],
                    lambda xs: kv_to(xs[0]), lambda a: [_t(a.reshape(d, k * h))])
        add(("blocks", "attn", "o"), i, [(p + "self_attn.o_proj.weight", (d, n * h))],
            lambda xs: _t(xs[0]).reshape(n, h, d), lambda a: [_t(a.reshape(n * h, d))])
        add(("blocks", "mlp_norm", "scale"), i,
            [(p + "post_attention_layernorm.weight", (d,))], *identity)
        if fused:
            gate_up = [(p + "mlp.gate_up_proj.weight", (2 * f, d))]
            add(("blocks", "mlp", "gate"), i, gate_up, lambda xs: _t(xs[0][:f]), None)
            add(("blocks", "mlp", "up"), i, gate_up, lambda xs: _t(xs[0][f:]), None)
        else:
            for part in ("gate", "up"):
                add(("blocks", "mlp", part), i, [(p + f"mlp.{part}_proj.weight", (f, d))],
                    lambda xs: _t(xs[0]), lambda a: [_t(a)])
        add(("blocks", "mlp", "down"), i, [(p + "mlp.down_proj.weight", (d, f))],
            lambda xs: _t(xs[0]), lambda a: [_t(a)])
    add(("final_norm", "scale"), None, [("model.norm.weight", (d,))], *identity)
    if not config.tie_embeddings:
        add(("lm_head",), None, [("lm_head.weight", (v, d))],
            lambda xs: _t(xs[0]), lambda a: [_t(a)])
    return out


def hf_tensors(config: ModelConfig, architecture: str = "Phi3ForCausalLM") -> dict[str, HFTensor]:
    """Expected HF tensor name -> HFTensor, in file order (fused tensors listed once)."""
    found: dict[str, HFTensor] = {}
    for g in groups(config, architecture):
        for t in g.tensors:
            found.setdefault(t.name, t)
    return found


def export_tensors(config: ModelConfig, architecture: str,
                   leaf: Callable[[Path, int | None], np.ndarray]):
    """Yields (hf_name, array) in file order; `leaf(path, layer)` returns our array (one layer).

    The fused Phi-3 tensors are concatenated from the q/k/v and gate/up leaves.
    """
    d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
    done: set[str] = set()
    for g in groups(config, architecture):
        name = g.tensors[0].name
        if name in done:
            continue
        done.add(name)
        if g.to_hf is not None:
            arrays = g.to_hf(leaf(g.path, g.layer))
            yield from zip([t.name for t in g.tensors], arrays)
        elif name.endswith("qkv_proj.weight"):
            parts = [leaf(("blocks", "attn", p), g.layer) for p in ("q", "k", "v")]
            rows = [parts[0].reshape(d, n * h).T, parts[1].reshape(d, k * h).T,
                    parts[2].reshape(d, k * h).T]
            yield name, np.ascontiguousarray(np.concatenate(rows, axis=0))
        elif name.endswith("gate_up_proj.weight"):
            parts = [leaf(("blocks", "mlp", p), g.layer) for p in ("gate", "up")]
            yield name, np.ascontiguousarray(np.concatenate([parts[0].T, parts[1].T], axis=0))
        else:  # pragma: no cover - every group either has to_hf or is a fused tensor
            raise AssertionError(name)
