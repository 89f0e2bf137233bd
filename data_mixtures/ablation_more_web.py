"""7B / 1T-token mixture ablation 'more_web' (its rule: data_mixtures/ablations.py)."""

from data_mixtures.ablations import mixture

MIXTURE = mixture("more_web")
