"""Data-mixture ablations at 7B parameters / 1T tokens (the scale at which Table 5 was chosen).

Every variant is Table 5 (data_mixtures/phi4_pretrain.py, the one place its numbers live)
transformed by a rule, over the same five sources and stores; none retypes a fraction:

    table5           Table 5 as is: web 15, web rewrites 15, synthetic 40, code 20, acquired 10
    uniform          every source the same share (20% each)
    more_web         half of synthetic's share moved to web (web 35%, synthetic 20%): fresh web
                     tokens instead of more synthetic epochs
    synthetic_heavy  web's share moved to synthetic (synthetic 55%, no filtered web)
    synthetic_only   synthetic data only (the paper: loses on knowledge benchmarks such as
                     TriviaQA and hallucinates more)

The variants and their rules are this project's reading of the paper's ablation findings
("more epochs over synthetic data beat adding fresh web tokens"; "synthetic-only models lose on
knowledge"), not the paper's exact ablation table. Each variant has a one-line mixture module,
`data_mixtures/ablation_<variant>.py`, so `data.mixture` can name it; see
experiments/ablation_7b_1t.py for the sweep.

    python -m phi4_jax.data.plan data_mixtures/ablation_synthetic_only.py --seq_len 4096 \\
        --global_batch 5760
"""

from __future__ import annotations

from collections.abc import Callable

from data_mixtures.phi4_pretrain import MIXTURE as TABLE_5_MIXTURE
from data_mixtures.phi4_pretrain import TABLE_5
from data_mixtures.phi4_pretrain import TOTAL_TOKENS as TABLE_5_TOKENS
from phi4_jax.data.mixture import Mixture, Stage

TOTAL_TOKENS = 1e12  # the ablation budget: 7B parameters, 1T tokens


def move(weights: dict[str, float], source: str, target: str, share: float) -> dict[str, float]:
    """`share` of `source`'s weight moved to `target`."""
    out = dict(weights)
    out[source] -= share * weights[source]
    out[target] += share * weights[source]
    return out


VARIANTS: dict[str, Callable[[dict[str, float]], dict[str, float]]] = {
    "table5": dict,
    "uniform": lambda w: {k: 1 / len(w) for k in w},
    "more_web": lambda w: move(w, "synthetic", "web", 0.5),
    "synthetic_heavy": lambda w: move(w, "web", "synthetic", 1.0),
    "synthetic_only": lambda w: {k: float(k == "synthetic") for k in w},
}


def weights(variant: str) -> dict[str, float]:
    """The variant's token fractions per source (they sum to 1)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown mixture variant {variant!r}; variants are {list(VARIANTS)}")
    return VARIANTS[variant]({role: fraction for role, (fraction, _) in TABLE_5.items()})


def module(variant: str) -> str:
    """The data_mixtures module of a variant (what `data.mixture` names)."""
    weights(variant)  # validates the name
    return f"ablation_{variant}"


def mixture(variant: str) -> Mixture:
    return TABLE_5_MIXTURE.replace(
        name=module(variant), total_tokens=TOTAL_TOKENS, stages=(Stage(weights(variant)),),
        description=f"7B / 1T-token mixture ablation: {variant} (derived from Table 5)")


def smoke_name(variant: str) -> str:
    """The registered name of a variant's smoke mixture (`ablation_7b_1t:smoke`)."""
    weights(variant)  # validates the name
    return f"ablation_smoke_{variant}"


def smoke_mixture(variant: str, cache_dir: str) -> Mixture:
    """The embedded offline corpus under the variant's weights: its five roles stand in for
    Table 5's sources (unique tokens scaled as data_mixtures/embedded.py scales them), so
    smoke runs of two variants differ by their mixture only. data_mixtures registers it as
    `smoke_name(variant)`."""
    from phi4_jax.data.embedded import embedded_mixture

    share = weights(variant)
    table = {role: (share[role], unique) for role, (_, unique) in TABLE_5.items()}
    return embedded_mixture(cache_dir, table, reference_tokens=TABLE_5_TOKENS,
                            name=smoke_name(variant),
                            description=f"embedded corpus, ablation variant {variant}'s weights")
