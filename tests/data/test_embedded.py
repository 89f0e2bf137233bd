"""The embedded mixture: real offline text in Table 5's roles, cached; the roles' table comes
from the caller (data_mixtures/embedded.py passes Table 5)."""

import time

import pytest

from data_mixtures.embedded import build_mixture
from data_mixtures.phi4_pretrain import TABLE_5
from phi4_jax.data.embedded import embedded_mixture, rewrite
from phi4_jax.data.plan import token_plan
from phi4_jax.data.store import TokenStore
from phi4_jax.data.tokenizer import ENDOFTEXT, phi4_encoding


def test_roles_fractions_and_epochs(embedded):
    assert embedded.source_names == tuple(TABLE_5)
    assert embedded.stages[0].weights == {k: f for k, (f, _) in TABLE_5.items()}
    plan = token_plan(embedded)
    table5 = token_plan(embedded, total_tokens=10e12,
                        unique_tokens={k: u for k, (_, u) in TABLE_5.items()})
    for s in plan.sources:  # scaled-down Table 5: the same repetition per role (+-1%)
        assert s.epochs == pytest.approx(table5.source(s.name).epochs, rel=0.01)


def test_stores_hold_real_text(embedded):
    enc = phi4_encoding()
    samples = {}
    for source in embedded.sources:
        store = TokenStore(source.path)
        assert store.num_documents > 10 and store.num_tokens > 20_000
        doc = store.document(0)
        assert doc[-1] == ENDOFTEXT
        samples[source.name] = enc.decode(doc[:-1].tolist())
    assert "Problem:" in samples["synthetic"] and "Answer:" in samples["synthetic"]
    assert samples["web_rewrites"].startswith("Question: In the Python standard library")
    assert "def " in samples["code"] or "class " in samples["code"] or "import" in samples["code"]


def test_cached_call_is_fast_and_identical(embedded):
    root = embedded.sources[0].path.rsplit("/", 2)[0]
    start = time.perf_counter()
    again = build_mixture(root)
    assert time.perf_counter() - start < 1.0
    assert again == embedded


def test_the_table_must_name_the_corpus_roles(tmp_path):
    with pytest.raises(ValueError, match="the embedded corpus has roles"):
        embedded_mixture(str(tmp_path), {"web": (1.0, 1e9)}, reference_tokens=1e10)


def test_rewrite_template():
    text = rewrite("json.dumps", "Serialize obj.\n\nMore detail here.\n\nAnd more.")
    assert text == ("Question: In the Python standard library, what does `json.dumps` do?\n"
                    "Answer: Serialize obj.\n\nKey points:\n- More detail here.\n- And more.")
