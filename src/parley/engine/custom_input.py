"""A custom tool call's input as it streams: the upstream writes the call as a function of `{"input": "..."}`
(schema.tools.CUSTOM_INPUT_SCHEMA), so the input is that JSON string, decoded here as its arguments arrive, for
`response.custom_tool_call_input.delta` events as they come (and a run's event log holding the input so far).

Arguments that do not start as that envelope are taken whole when the call ends (engine/stream.py `_close_custom`).
"""

from __future__ import annotations

import orjson

# `{"input": "` with the whitespace JSON allows: where it may stand (before that many characters of the head).
_HEAD = '{"input":"'
_SPACE_BEFORE = frozenset({0, 1, 8, 9})
_SPACE = frozenset(" \t\r\n")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class CustomInput:
    """Decodes one call's arguments chunk by chunk; `text` is what was decoded (and streamed) so far."""

    __slots__ = ("_escape", "_head", "_high", "_rest", "state", "text")

    def __init__(self) -> None:
        self.state = "head"  # -> "string" (inside the input), "end" (it closed), "raw" (not the envelope)
        self.text: list[str] = []
        self._head = 0  # characters of _HEAD matched
        self._escape = ""  # an escape sequence split across chunks
        self._high = ""  # a high surrogate waiting for its low half
        self._rest: list[str] = []  # what came after an escape JSON does not have (kept, not decoded)

    @classmethod
    def resumed(cls, text: list[str]) -> CustomInput:
        """An input taken up from a run's log: the text its delta events carried, the rest lost with the run."""
        taken = cls()
        taken.state, taken.text = "string", list(text)
        return taken

    def feed(self, chunk: str) -> str:
        """The input text this chunk of arguments adds (may be empty)."""
        out: list[str] = []
        for at, ch in enumerate(chunk):
            if self.state == "head":
                if self._head in _SPACE_BEFORE and ch in _SPACE:
                    continue
                if ch != _HEAD[self._head]:
                    self.state = "raw"
                    break
                self._head += 1
                if self._head == len(_HEAD):
                    self.state = "string"
            elif self.state == "string":
                if not self._string_char(ch, out):
                    self._rest.append(chunk[at + 1:])
                    break
            elif self.state == "bad":
                self._rest.append(chunk[at:])
                break
            else:
                break
        text = "".join(out)
        if text:
            self.text.append(text)
        return text

    def _string_char(self, ch: str, out: list[str]) -> bool:
        """One character inside the JSON string; False when it cannot be decoded (the rest is kept raw)."""
        if self._escape:
            self._escape += ch
            if self._escape[1] == "u":
                if len(self._escape) < 6:
                    return True
                try:
                    code = int(self._escape[2:], 16)
                except ValueError:
                    return self._bad(self._escape, out)
                self._escape = ""
                self._unicode(chr(code), out)
                return True
            decoded = _ESCAPES.get(ch)
            if decoded is None:
                return self._bad(self._escape, out)
            self._escape = ""
            self._unicode(decoded, out)
            return True
        if ch == "\\":
            self._escape = ch
            return True
        if ch == '"':
            self._unicode("", out)
            self.state = "end"
            return True
        self._unicode(ch, out)
        return True

    def _unicode(self, ch: str, out: list[str]) -> None:
        if self._high:
            if ch and "\udc00" <= ch <= "\udfff":
                ch, self._high = (self._high + ch).encode("utf-16", "surrogatepass").decode("utf-16"), ""
            else:
                out.append(self._high.encode("utf-8", "replace").decode())
                self._high = ""
        if ch and "\ud800" <= ch <= "\udbff":
            self._high = ch
            return
        out.append(ch)

    def _bad(self, escape: str, out: list[str]) -> bool:
        self._escape = ""
        self.state = "bad"
        out.append(escape)  # as written: what follows an escape JSON does not have is the model's text as it is
        return False

    def finish(self, arguments: str) -> str:
        """The call's whole input, once its arguments ended: what was decoded (plus what could not be, as written)
        when they were the envelope (or began as it), else what the whole arguments say."""
        if self.state in ("string", "end", "bad"):
            return "".join(self.text) + "".join(self._rest)
        if self.state == "head":  # cut before its input began (`{"inp`): none of it was written
            return ""
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
        return parsed["input"] if isinstance(parsed, dict) and isinstance(parsed.get("input"), str) else arguments
