"""retrieval/bm25.py scores chunks as FTS5's bm25() does, on the same tokens (stemmed, case- and accent-folded)."""

from __future__ import annotations

import sqlite3

import pytest

from parley.retrieval.bm25 import TOKENIZER, IndexStats, idf, scores, term_frequencies, tokens

TEXTS = {
    1: "Running runners run; the runner ran.",
    2: "A café in Zürich: CAFE, cafés and coffee_cup.",
    3: "Nothing to see here.",
    4: "run run run run run run run run run run, a long text about running and more running " * 3,
    5: "Zurich coffee cup",
}


def _fts5_bm25(words: list[str]) -> dict[int, float]:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZER}')")
    db.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)", list(TEXTS.items()))
    match = " OR ".join(f'"{w}"' for w in words)
    return {int(r): -float(s) for r, s in db.execute("SELECT rowid, bm25(t) FROM t WHERE t MATCH ?", (match,))}


def _stats(words: list[str]) -> IndexStats:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)", list(TEXTS.items()))
    lengths = {seq: 0 for seq in TEXTS}
    for (doc,) in db.execute("SELECT doc FROM v"):
        lengths[int(doc)] += 1
    counts = {w: int(db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (f'"{w}"',)).fetchone()[0])
              for w in words}
    return IndexStats(len(TEXTS), sum(lengths.values()) / len(TEXTS), counts, lengths)


@pytest.mark.parametrize("words", [["running"], ["cafe", "zurich"], ["coffee", "cup", "ran"], ["run", "runner"],
                                   ["absent", "here"]])
def test_scores_are_fts5_bm25(words: list[str]) -> None:
    want = _fts5_bm25(words)
    got = scores(term_frequencies(TEXTS, tokens(words)), _stats(words))
    assert {seq for seq, score in got.items() if score > 0} == set(want)
    for seq, score in want.items():
        assert got[seq] == pytest.approx(score, rel=1e-12)


def test_frequencies_count_the_stemmed_folded_token() -> None:
    assert tokens(["running", "Café", "coffee_cup", "ZÜRICH"]) == {"running": "run", "Café": "cafe",
                                                                  "ZÜRICH": "zurich"}
    found = term_frequencies(TEXTS, tokens(["running", "café", "coffee_cup"]))
    assert found[1] == {"running": 2}  # Running and run (porter keeps "runner"; "ran" is another word)
    assert found[2] == {"café": 3}  # café, CAFE, cafés
    assert all("coffee_cup" not in f for f in found.values())  # two tokens: not one word's
    assert idf(10, 9) == 1e-6  # a word in most rows weighs (almost) nothing, never less
