"""7B / 1T-token mixture ablation 'synthetic_only' (its rule: data_mixtures/ablations.py)."""

from data_mixtures.ablations import mixture

MIXTURE = mixture("synthetic_only")
