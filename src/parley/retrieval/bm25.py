"""BM25 of a few chunks, computed as SQLite's FTS5 `bm25()` computes it, without a pass over every match.

FTS5 scores a query only by running it over its whole index: asked for the score of a few given rows, it still
reads every row that matches (bench/retrieval.py: as long as finding the best ones). services/vector_search.py
asks for few: the candidates of words that matched, rescored with the query's common words too, and the text
score of vector candidates. Each is FTS5's formula (fts5_aux.c, k1 = 1.2, b = 0.75):

    score = sum over query words w of idf(w) * f(w) * (k1 + 1) / (f(w) + k1 * (1 - b + b * |D| / avgdl))
    idf(w) = ln((N - n(w) + 0.5) / (n(w) + 0.5)), at least 1e-6

with N, avgdl and |D| from the index's own statistics and n(w) its document count (store/sql_vector_search.py).
f(w), the occurrences of w's token in the chunk, comes from FTS5 too: the words and the chunks' texts are put in
an in-memory FTS5 table with the same tokenizer (`porter unicode61`) and read back through its `fts5vocab`
instance table, so they are cut and stemmed exactly as the index cut and stemmed them. Blocking (sqlite3): run
it in a thread.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

K1 = 1.2
B = 0.75
TOKENIZER = "porter unicode61"  # migration 6's FTS5 table


@dataclass(frozen=True, slots=True)
class IndexStats:
    """What FTS5's bm25() reads of its index: the number of rows, their mean length in tokens, and the number of
    rows holding each query word (`counts`), and each chunk's length in tokens (`lengths`)."""

    rows: int
    mean_length: float
    counts: Mapping[str, int]
    lengths: Mapping[int, int]


def idf(rows: int, count: int) -> float:
    value = math.log((rows - count + 0.5) / (count + 0.5))
    return value if value > 0 else 1e-6


def _tokenizer() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE chunks USING fts5(text, tokenize='{TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE tokens USING fts5vocab(chunks, 'instance')")
    return db


def tokens(words: list[str]) -> dict[str, str]:
    """Each word's FTS5 token (cut, folded and stemmed as the index does); words that are not one token are left
    out (they are phrases to FTS5)."""
    db = _tokenizer()
    try:
        db.executemany("INSERT INTO chunks(rowid, text) VALUES (?, ?)", [(i, word) for i, word in enumerate(words)])
        cut: dict[int, list[str]] = {}
        for doc, term in db.execute("SELECT doc, term FROM tokens"):
            cut.setdefault(int(doc), []).append(str(term))
    finally:
        db.close()
    return {words[i]: terms[0] for i, terms in cut.items() if len(terms) == 1}


def term_frequencies(texts: Mapping[int, str], token_of: Mapping[str, str]) -> dict[int, dict[str, int]]:
    """Per chunk, how often each word's token (`tokens()`) occurs in it."""
    wanted = sorted(set(token_of.values()))
    counts: dict[tuple[int, str], int] = {}
    if wanted:
        db = _tokenizer()
        try:
            db.executemany("INSERT INTO chunks(rowid, text) VALUES (?, ?)", list(texts.items()))
            marks = ",".join("?" * len(wanted))
            query = f"SELECT doc, term, count(*) FROM tokens WHERE term IN ({marks}) GROUP BY doc, term"
            for doc, term, count in db.execute(query, wanted):
                counts[(int(doc), str(term))] = int(count)
        finally:
            db.close()
    return {seq: {word: n for word, token in token_of.items() if (n := counts.get((seq, token), 0))}
            for seq in texts}


def scores(frequencies: Mapping[int, Mapping[str, int]], stats: IndexStats) -> dict[int, float]:
    """BM25 of each chunk (0 for one holding none of the words), higher is better: -bm25() of FTS5."""
    weights = {word: idf(stats.rows, count) for word, count in stats.counts.items()}
    out: dict[int, float] = {}
    for seq, found in frequencies.items():
        norm = K1 * (1 - B + B * stats.lengths.get(seq, 0) / stats.mean_length) if stats.mean_length else K1
        out[seq] = sum(weights.get(word, 0.0) * f * (K1 + 1) / (f + norm) for word, f in found.items())
    return out
