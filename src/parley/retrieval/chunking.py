"""A file's text cut into overlapping chunks of tokens, each keeping its character offsets in the text.

Tokens are cl100k_base's (tiktoken, offline through providers/tokens.py): the tokenizer of OpenAI's embedding
models, so `max_chunk_size_tokens` means what it means on OpenAI. `auto` is OpenAI's default, 800 tokens with
400 overlapping. A chunk's text is exactly `text[start:end]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tiktoken

ENCODING = "cl100k_base"
MIN_CHUNK_TOKENS = 100
MAX_CHUNK_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
    max_chunk_size_tokens: int = 800
    chunk_overlap_tokens: int = 400

    def wire(self) -> dict[str, object]:
        """As a vector store file shows it (`auto` is stored as the static strategy it stands for)."""
        return {"type": "static", "static": {"max_chunk_size_tokens": self.max_chunk_size_tokens,
                                             "chunk_overlap_tokens": self.chunk_overlap_tokens}}


AUTO = ChunkingStrategy()


def check_strategy(max_tokens: int, overlap_tokens: int) -> str | None:
    """What is wrong with a static strategy, as OpenAI validates it (None if nothing)."""
    if not MIN_CHUNK_TOKENS <= max_tokens <= MAX_CHUNK_TOKENS:
        return f"max_chunk_size_tokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}"
    if overlap_tokens < 0:
        return "chunk_overlap_tokens must not be negative"
    if overlap_tokens > max_tokens // 2:
        return "chunk_overlap_tokens must not exceed half of max_chunk_size_tokens"
    return None


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    start: int  # character offsets in the file's text
    end: int
    tokens: int
    text: str


def chunk_text(encoding: tiktoken.Encoding, text: str, strategy: ChunkingStrategy = AUTO) -> list[Chunk]:
    """Windows of `max_chunk_size_tokens` tokens, each starting `max - overlap` tokens after the previous one;
    the last ends with the text. CPU-bound (~1 s per MB): run it in a thread."""
    tokens = encoding.encode_ordinary(text)
    if not tokens:
        return []
    offsets = _char_offsets(encoding, tokens, len(text))
    size, step = strategy.max_chunk_size_tokens, strategy.max_chunk_size_tokens - strategy.chunk_overlap_tokens
    chunks: list[Chunk] = []
    first = 0
    while True:
        last = min(first + size, len(tokens))
        start, end = int(offsets[first]), int(offsets[last])
        chunks.append(Chunk(len(chunks), start, end, last - first, text[start:end]))
        if last == len(tokens):
            return chunks
        first += step


def _char_offsets(encoding: tiktoken.Encoding, tokens: list[int], length: int) -> npt.NDArray[np.int64]:
    """offsets[i]: where token i starts in the text (in characters), offsets[len(tokens)] = len(text). A token
    that starts inside a character (byte-level BPE splits some) starts with that character, as tiktoken's
    decode_with_offsets has it."""
    pieces = encoding.decode_tokens_bytes(tokens)
    data = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    char_starts = (data & 0xC0) != 0x80  # UTF-8: every byte but continuation bytes starts a character
    chars_before = np.concatenate(([0], np.cumsum(char_starts, dtype=np.int64)))
    byte_starts = np.concatenate(([0], np.cumsum([len(p) for p in pieces], dtype=np.int64)))
    offsets = chars_before[byte_starts]
    inside = np.zeros(len(byte_starts), dtype=bool)
    inside[:-1] = ~char_starts[np.minimum(byte_starts[:-1], len(data) - 1)]
    offsets = offsets - inside
    if int(chars_before[-1]) != length:
        raise ValueError("the tokens do not decode to the text")  # encode_ordinary round-trips any str
    return np.asarray(offsets, dtype=np.int64)
