"""Which part of a decoded reply each token wrote, in one pass (a detection box's score needs its tokens)."""

from __future__ import annotations

from tokenizers.decoders import DecodeStream


def token_pieces(tokenizer, tokens: list[int]) -> list[str]:
    """`tokenizer`: a `tokenizers.Tokenizer`. A byte split across tokens belongs to the token that completes
    it; special tokens write nothing."""
    stream = DecodeStream(skip_special_tokens=True)
    return [stream.step(tokenizer, token) or "" for token in tokens]
