"""7B / 1T-token mixture ablation 'uniform' (its rule: data_mixtures/ablations.py)."""

from data_mixtures.ablations import mixture

MIXTURE = mixture("uniform")
