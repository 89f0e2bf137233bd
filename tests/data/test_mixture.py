"""Mixture resolution: a Mixture, a file, a dotted module, a function of the cache directory, or a
name registered by the package that declares it (data_mixtures/ registers its files)."""

import os

import pytest

import data_mixtures
from phi4_jax.data import mixture as mixture_lib
from phi4_jax.data.mixture import Mixture, MixtureError, Source, Stage, load_mixture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = Mixture("tiny", sources=(Source("x", "x", unique_tokens=10),), stages=(Stage({"x": 1}),),
               total_tokens=100)


def test_every_mixture_file_is_registered_by_name():
    assert {"phi4_pretrain", "phi4_midtrain", "phi4_sft", "embedded", "embedded_midtrain",
            "ablation_table5"} <= set(mixture_lib.registered_mixtures())
    assert "ablations" not in data_mixtures.names()  # the rules module is not a mixture
    by_name = load_mixture("phi4_pretrain")
    by_path = load_mixture(os.path.join(REPO, "data_mixtures", "phi4_pretrain.py"))
    assert by_name == by_path == load_mixture("data_mixtures.phi4_pretrain")


def test_functions_and_build_mixture_get_the_cache_dir(tmp_path):
    seen = []
    mixture_lib.register_mixture("test_cached", lambda d: seen.append(d) or TINY)
    assert load_mixture("test_cached", cache_dir=str(tmp_path)) is TINY
    assert load_mixture(TINY) is TINY
    path = tmp_path / "on_demand.py"
    path.write_text("from tests.data.test_mixture import TINY\n"
                    "def build_mixture(cache_dir):\n"
                    "    return TINY.replace(name=cache_dir)\n")
    assert load_mixture(str(path), cache_dir="/somewhere").name == "/somewhere"
    assert load_mixture(str(path)).name == mixture_lib.default_cache_dir()
    assert seen == [str(tmp_path)]


def test_unknown_names_and_bad_registrations_are_explained(tmp_path):
    with pytest.raises(MixtureError, match=r"unknown mixture 'nope'.*registered: .*phi4_pretrain"):
        load_mixture("nope")
    with pytest.raises(MixtureError, match="no such mixture file"):
        load_mixture(str(tmp_path / "missing.py"))
    with pytest.raises(MixtureError, match="bare word"):
        mixture_lib.register_mixture("a.b", TINY)
    with pytest.raises(MixtureError, match="neither a file path nor a dotted module"):
        mixture_lib.register_mixture("loop", "loop")
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(MixtureError, match="defines no MIXTURE"):
        load_mixture(str(tmp_path / "empty.py"))
