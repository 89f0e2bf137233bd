"""The mixture plan: Table 5 epochs, the mid-training mixture, max repetition, the CLI table."""

import os

import numpy as np
import pytest

from phi4_jax import cli
from phi4_jax.data import plan as mixture_plan
from phi4_jax.data.mixture import Mixture, MixtureError, Source, Stage, load_mixture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = os.path.join(REPO, "data_mixtures", "phi4_pretrain.py")
MIDTRAIN = os.path.join(REPO, "data_mixtures", "phi4_midtrain.py")
TABLE_5_EPOCHS = {"web": 1.2, "web_rewrites": 5.2, "synthetic": 13.8, "code": 2.4, "acquired": 1.7}


def test_table_5_epochs_at_10t():
    plan = mixture_plan.token_plan(load_mixture(PRETRAIN))
    assert plan.total_tokens == 10e12
    for name, epochs in TABLE_5_EPOCHS.items():
        assert plan.source(name).epochs == pytest.approx(epochs, abs=0.05)
    fractions = {s.name: s.fraction for s in plan.sources}
    assert fractions == pytest.approx({"web": 0.15, "web_rewrites": 0.15, "synthetic": 0.40,
                                       "code": 0.20, "acquired": 0.10})


def test_table_5_in_rows_at_4k_and_5760():
    plan, schedule = mixture_plan.row_plan(load_mixture(PRETRAIN), seq_len=4096,
                                           global_batch_size=5760)
    assert plan.num_steps == int(10e12 // (4096 * 5760))
    assert sum(s.rows for s in plan.sources) == plan.num_steps * 5760 == schedule.total_rows
    for name, epochs in TABLE_5_EPOCHS.items():
        assert plan.source(name).epochs == pytest.approx(epochs, abs=0.05)


def test_midtrain_is_30_percent_long_and_70_percent_recall():
    mixture = load_mixture(MIDTRAIN)
    fractions = mixture.fractions()
    long = [s.name for s in mixture.sources if s.name.startswith("long_")]
    assert sum(fractions[n] for n in long) == pytest.approx(0.30)
    assert sum(f for n, f in fractions.items() if n not in long) == pytest.approx(0.70)
    assert fractions["synthetic"] == pytest.approx(0.70 * 0.40)
    assert all(mixture.source(n).packing == "best_fit" for n in long)
    plan = mixture_plan.token_plan(mixture)
    assert plan.total_tokens == 250e9
    # > 16K documents are up-sampled: read more often than 8K-16K ones
    assert plan.source("long_16k_plus").epochs > plan.source("long_8k_16k").epochs


def test_max_epochs_violation_names_the_source():
    mixture = Mixture("m", total_tokens=100, sources=(Source("x", "x", 10, max_epochs=3),
                                                      Source("y", "y", 100)),
                      stages=(Stage({"x": 0.5, "y": 0.5}),))
    with pytest.raises(mixture_plan.MixturePlanError,
                       match=r"source 'x': 5.000 epochs planned, max_epochs 3"):
        mixture_plan.token_plan(mixture)


def test_missing_unique_tokens_is_an_error():
    mixture = Mixture("m", total_tokens=100, sources=(Source("x", "x"),), stages=(Stage({"x": 1}),))
    with pytest.raises(mixture_plan.MixturePlanError, match="source 'x': unique tokens unknown"):
        mixture_plan.token_plan(mixture)


@pytest.mark.parametrize("kwargs, match", [
    (dict(stages=(Stage({"x": 0.5}),)), "weights sum to 0.5"),
    (dict(stages=(Stage({"z": 1.0}),)), "unknown sources"),
    (dict(stages=(Stage({"x": 1.0}, fraction=0.5),)), "stage fractions sum to 0.5"),
    (dict(sources=(Source("x", "x", packing="zigzag"),)), "packing 'zigzag'"),
])
def test_invalid_mixtures_are_rejected(kwargs, match):
    base = dict(name="m", total_tokens=1, sources=(Source("x", "x"),), stages=(Stage({"x": 1}),))
    with pytest.raises(MixtureError, match=match):
        Mixture(**{**base, **kwargs})


def test_stages_split_the_budget():
    mixture = Mixture("m", total_tokens=1000,
                      sources=(Source("x", "x", 100), Source("y", "y", 100)),
                      stages=(Stage({"x": 1.0}, fraction=0.25), Stage({"y": 1.0}, fraction=0.75)))
    plan = mixture_plan.token_plan(mixture)
    assert plan.epochs() == pytest.approx({"x": 2.5, "y": 7.5})
    rows_plan, schedule = mixture_plan.row_plan(mixture, seq_len=10, global_batch_size=4)
    assert rows_plan.stage_steps == (6, 19)
    source, _ = schedule.lookup(np.arange(schedule.total_rows))
    assert (source[:24] == 0).all() and (source[24:] == 1).all()


def test_cli_prints_the_table(capsys):
    assert mixture_plan.main([PRETRAIN]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name, epochs in TABLE_5_EPOCHS.items():
        assert abs(float(lines[name][5]) - epochs) <= 0.05
    assert lines["synthetic"][2:5] == ["40.0%", "290.00B", "4.00T"]


def test_cli_reports_plan_errors(capsys, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from phi4_jax.data.mixture import *\n"
                    "MIXTURE = Mixture('bad', total_tokens=1e3, sources=(Source('x', 'x', 10, "
                    "max_epochs=2),), stages=(Stage({'x': 1.0}),))\n")
    with pytest.raises(cli.UsageError, match="source 'x'"):
        mixture_plan.main([str(path)])


def test_cli_explains_an_unknown_mixture(capsys):
    with pytest.raises(cli.UsageError, match="unknown mixture 'no_such_mixture'"):
        mixture_plan.main(["no_such_mixture"])
