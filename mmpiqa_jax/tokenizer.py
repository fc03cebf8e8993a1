"""CLIP's byte-pair tokenizer, giving exactly the ids of OpenAI's (and open_clip's) `tokenize`.

The BPE is transformers' `CLIPTokenizer` over OpenAI's BPE file (`mmpiqa_jax/assets/`); the text
cleaning is OpenAI's (`ftfy`, HTML unescaping), which that backend's normaliser lacks.
"""
from __future__ import annotations

import functools
import gzip
import html
import os
from collections.abc import Sequence

import ftfy
import numpy as np
import transformers

DEFAULT_CONTEXT_LENGTH = 77
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"

BPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                        "bpe_simple_vocab_16e6.txt.gz")

# OpenAI's vocabulary: 256 byte symbols, the same with '</w>', 48,894 merges, 2 special tokens.
_NUM_MERGES = 49152 - 256 - 2


def clean_text(text: str) -> str:
    """OpenAI's `basic_clean` + `whitespace_clean` + lowercase, in that order."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


@functools.lru_cache(maxsize=None)
def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]  # mapped to 256, 257, ...
    chars = printable + [256 + i for i in range(len(others))]
    return dict(zip(printable + others, map(chr, chars)))


def _read_openai_bpe(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges from OpenAI's BPE file, ordered as OpenAI's `SimpleTokenizer` does."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 0 is a version header; OpenAI uses exactly the next _NUM_MERGES lines.
    merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges),
             START_OF_TEXT, END_OF_TEXT]
    return {token: i for i, token in enumerate(vocab)}, merges


@functools.lru_cache(maxsize=None)
def load_tokenizer() -> transformers.CLIPTokenizer:
    """The BPE backend: transformers' `CLIPTokenizer` of the shipped BPE file, built once."""
    vocab, merges = _read_openai_bpe(BPE_PATH)
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


def tokenize(texts: str | Sequence[str],
             context_length: int = DEFAULT_CONTEXT_LENGTH) -> np.ndarray:
    """OpenAI CLIP's `tokenize`, int32 [N, context_length]: SOT, ids, EOT, zero padded; too
    long texts end with EOT."""
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (start and end tokens), "
                         f"got {context_length}")
    backend = load_tokenizer()
    sot, eot = backend.convert_tokens_to_ids([START_OF_TEXT, END_OF_TEXT])
    result = np.zeros((len(texts), context_length), np.int32)
    encoded = backend([clean_text(t) for t in texts], add_special_tokens=False)
    for row, ids in zip(result, encoded["input_ids"]):
        tokens = [sot, *ids, eot]
        if len(tokens) > context_length:
            # open_clip truncates and keeps end-of-text as the last token.
            tokens = tokens[:context_length - 1] + [eot]
        row[:len(tokens)] = tokens
    return result
