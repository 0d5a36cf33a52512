"""The retrieval benchmark's documents and questions: the reStructuredText sources of the Python 3.11 documentation
as Debian ships them (package python3.11-doc, /usr/share/doc/python3.11/html/_sources; PSF licence), and questions
generated from them deterministically, each answered by one passage.

Two kinds of question, half each, drawn with a fixed seed:
- `title`: a section title (markup removed, at least 3 words, unique in the corpus); the answer is where the
  section starts (its heading line).
- `sentence`: a prose sentence of 12-40 words from a paragraph (no code or literals), reduced to a keyword
  question: lower case, stop words and every fourth remaining word dropped (so neither retriever gets the sentence
  verbatim); the answer is that sentence.
A retrieved chunk answers when it is of the question's file and contains the answer's text.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CORPUS = Path("/usr/share/doc/python3.11/html/_sources")
_UNDERLINE = re.compile(r"^([=\-~^*+#\"'`])\1{2,}\s*$")
_ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_MARKUP = re.compile(r"[`*|_\[\]]|\.\.\s|::")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
STOP_WORDS = frozenset(
    "a an the of to in is are be by for on with as at or and it its this that these those from which can if not "
    "no will was were has have had but so than then there their they you your we our into also may must should "
    "when where what who how all any each such other more most only same some do does".split())


@dataclass(frozen=True, slots=True)
class Question:
    kind: str  # "title" | "sentence"
    query: str
    filename: str  # relative path, the name the file is uploaded with
    answer: str  # text the answering chunk contains


def corpus_files(root: Path, limit: int | None) -> list[Path]:
    """The .rst.txt files, sorted; with `limit`, an even spread over the sorted list (every section of the docs)."""
    files = sorted(root.rglob("*.rst.txt"))
    if limit is None or limit >= len(files):
        return files
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


def plain(text: str) -> str:
    return " ".join(_MARKUP.sub(" ", _ROLE.sub(r"\1", text)).split())


def _sections(text: str) -> list[tuple[str, str]]:
    """(title, heading line as written) of each section."""
    lines = text.splitlines()
    found = []
    for i in range(1, len(lines)):
        title = lines[i - 1].strip()
        if _UNDERLINE.match(lines[i]) and title and len(lines[i].strip()) >= len(title) - 1 \
                and not _UNDERLINE.match(lines[i - 1]):
            found.append((plain(title), lines[i - 1]))
    return found


def _sentences(text: str) -> list[str]:
    """Prose sentences: from paragraphs of plain lines (no directives, code, lists or markup roles)."""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if not lines or any(line.startswith((" ", "\t", "..", "*", "-", "#", ">>>", "|")) for line in lines):
            continue
        if any(_UNDERLINE.match(line) for line in lines) or "::" in paragraph or "``" in paragraph:
            continue
        for sentence in _SENTENCE.split(" ".join(line.strip() for line in lines)):
            if 12 <= len(sentence.split()) <= 40:
                out.append(sentence)
    return out


def keyword_question(sentence: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z0-9_.]+", sentence.lower()) if w not in STOP_WORDS]
    kept = [w.strip(".") for i, w in enumerate(words) if i % 4 != 3]
    return " ".join(w for w in kept if w)


def questions(root: Path, files: list[Path], count: int, seed: int = 7) -> list[Question]:
    texts = {str(path.relative_to(root)): path.read_text(encoding="utf-8") for path in files}
    titles = Counter(title.lower() for text in texts.values() for title, _ in _sections(text))
    by_title = [Question("title", title, name, heading)
                for name, text in texts.items() for title, heading in _sections(text)
                if len(title.split()) >= 3 and titles[title.lower()] == 1]
    by_sentence = [Question("sentence", keyword_question(plain(s)), name, s)
                   for name, text in texts.items() for s in _sentences(text)
                   if sum(1 for other in texts.values() if s in other) == 1]
    rng = random.Random(seed)
    half = count // 2
    picked = rng.sample(by_title, min(half, len(by_title))) + rng.sample(by_sentence, min(count - half,
                                                                                         len(by_sentence)))
    return picked


def answers(question: Question, filename: str, text: str) -> bool:
    return filename == question.filename and _squash(question.answer) in _squash(text)


def _squash(text: str) -> str:
    return " ".join(text.split())
