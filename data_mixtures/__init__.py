"""Mixture files: each module declares `MIXTURE`, or `build_mixture(cache_dir)` when its stores
are built on demand (see phi4_jax.data.mixture).

Importing this package registers every mixture file here under its file name (`phi4_pretrain`,
`embedded`, `ablation_more_web`, ...) and each ablation variant's smoke mixture
(`ablation_smoke_more_web`: the embedded corpus under its weights), so an experiment's
`data.mixture = "phi4_pretrain"` resolves in `phi4_jax.data.mixture.load_mixture`; `experiments`
and `launch` import it. The library itself never imports this package: a file path works
without it.
"""

from __future__ import annotations

import functools
import os

from phi4_jax.data.mixture import register_mixture

_HERE = os.path.dirname(os.path.abspath(__file__))
_NOT_MIXTURES = {"__init__", "ablations"}  # ablations.py holds the rules the ablation_* use


def names() -> list[str]:
    """The mixture names this package registers."""
    return sorted(f[:-3] for f in os.listdir(_HERE)
                  if f.endswith(".py") and f[:-3] not in _NOT_MIXTURES)


for _name in names():
    register_mixture(_name, f"{__name__}.{_name}")

from data_mixtures import ablations  # noqa: E402 - after the files it registers beside

for _variant in ablations.VARIANTS:
    register_mixture(ablations.smoke_name(_variant),
                     functools.partial(ablations.smoke_mixture, _variant))
