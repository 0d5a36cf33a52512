"""Citations in streamed text: the model cites a numbered source with a marker such as `[2]`; the client gets
the text without the marker and an annotation at the position where it stood.

This is how OpenAI's answers look (`file_citation.index`: "the index in the output text at which to insert
the file citation"), computed deterministically from the markers the model wrote. Markers are recognised
while the text streams: text that may be the start of a marker (`[`, `[1`, `[1, 2`) is held back until it
is known to be one (dropped, annotations emitted) or not (released as text). Only markers naming a known
source are removed; any other bracketed text is left alone. Only `[n]`, `[n, m]` and `【n】` (also
`【n†...】`) forms are recognised.

A source with `inline` text (a web page: a Markdown link to it) has its marker replaced by that text instead,
and its annotation spans it (`url_citation.start_index`/`end_index`), as OpenAI's web search answers do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from parley.tools.base import Source

Annotation = dict[str, Any]


# A marker takes the blanks before it along ("capital [1]." becomes "capital." with the citation after "capital").
_MARKER = re.compile(r"[ \t]*(?:\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]|【(\d{1,3})(?:†[^】]{0,80})?】)")
# A tail that could still grow into a marker.
_OPENING = re.compile(r"[ \t]*(?:\[\d{0,3}(?:\s*,\s*\d{0,3})*\s*,?\s*|【\d{0,3}(?:†[^】]{0,80})?)?\Z")
_MAX_HELD = 100


def _numbers(match: re.Match[str]) -> list[int]:
    raw = match.group(1) if match.group(1) is not None else match.group(2)
    return list(dict.fromkeys(int(part) for part in raw.split(",")))


@dataclass(slots=True)
class CitationFilter:
    """Strips markers of known sources from one message's text as it streams."""

    sources: dict[int, Source]
    emitted: int = 0  # characters of visible text so far (the index of the next one)
    _held: str = ""
    _last: str = ""  # the last visible character so far
    annotations: list[Annotation] = field(default_factory=list)

    def feed(self, delta: str) -> tuple[str, list[Annotation]]:
        """Visible text of this delta (possibly empty) and the annotations its markers produced."""
        text = self._held + delta
        self._held = ""
        visible: list[str] = []
        added: list[Annotation] = []
        position = 0
        for match in _MARKER.finditer(text):
            numbers = _numbers(match)
            if not all(n in self.sources for n in numbers):
                continue
            before = text[position:match.start()]
            visible.append(before)
            self.emitted += len(before)
            for number in numbers:
                source = self.sources[number]
                if source.inline is None:
                    added.append({**source.annotation, "index": self.emitted})
                    continue
                last = "".join(visible)[-1:] or self._last
                inline = " " + source.inline if last and not last.isspace() else source.inline
                visible.append(inline)
                start = self.emitted + len(inline) - len(source.inline)
                self.emitted += len(inline)
                added.append({**source.annotation, "start_index": start, "end_index": self.emitted})
            position = match.end()
        rest = text[position:]
        opening = _OPENING.search(rest)
        if opening is not None and opening.start() < len(rest) and len(rest) - opening.start() <= _MAX_HELD:
            self._held = rest[opening.start():]
            rest = rest[:opening.start()]
        visible.append(rest)
        self.emitted += len(rest)
        self.annotations.extend(added)
        out = "".join(visible)
        self._last = out[-1:] or self._last
        return out, added

    def flush(self) -> str:
        """Text still held back at the end of the message (an unfinished marker is just text)."""
        held, self._held = self._held, ""
        self.emitted += len(held)
        self._last = held[-1:] or self._last
        return held
