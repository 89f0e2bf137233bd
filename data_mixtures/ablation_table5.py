"""7B / 1T-token mixture ablation 'table5' (its rule: data_mixtures/ablations.py)."""

from data_mixtures.ablations import mixture

MIXTURE = mixture("table5")
