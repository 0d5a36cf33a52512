"""Hypothesis strategies for the API fuzz test: request bodies shaped by the official SDK's request types (their
JSON Schema is the oracle), hostile mutations of them written as raw JSON text, broken byte bodies and hostile
query strings."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st
from pydantic import TypeAdapter

Json = Any  # a JSON value being built: dict, list, str, int, float, bool, None or Raw
Schema = dict[str, Any]

UPSTREAM_SECRET = "sk-fuzz-upstream-secret-123"  # the upstream key Parley is configured with: never in a reply
# Public model id -> the fake upstream's behaviour (parley.testing.fake_upstream).
MODELS = {"fake": "echo", "fake-tools": "tools", "fake-reasoning": "reasoning", "fake-length": "length",
          "fake-json": "json-valid"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
OMIT = object()  # an override that leaves its property out of the body
FROM_SCHEMA = object()  # an override that draws its property from the schema after all

# Placeholders for objects the harness creates before the first example (their ids are only known then);
# the test replaces them in the final request text.
RESPONSE_ID, BACKGROUND_ID, CONVERSATION_ID = "@response_id", "@background_id", "@conversation_id"
ITEM_ID, PROMPT_ID = "@item_id", "@prompt_id"
PLACEHOLDERS = (RESPONSE_ID, BACKGROUND_ID, CONVERSATION_ID, ITEM_ID, PROMPT_ID)


@dataclass(frozen=True)
class Raw:
    """JSON text written verbatim: what Python's json will not write (NaN, 1e999, a lone surrogate escape)."""

    text: str

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 40 else f"{self.text[:40]}...({len(self.text)} chars)"
        return f"Raw({shown!r})"


def json_schema_of(request_type: Any) -> Schema:
    schema: Schema = TypeAdapter(request_type).json_schema()
    return schema


def subschema(schema: Schema, names: tuple[str, ...]) -> Schema:
    """An object of some of `schema`'s properties (with its $defs): a body of a server-only endpoint whose fields
    are the SDK's (a prompt template holds `instructions`, `input`, `model` and `metadata` of a create body)."""
    return {"type": "object", "properties": {n: schema["properties"][n] for n in names}, "$defs": schema["$defs"]}


# ---------------------------------------------------------------- leaves

TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "fake", "auto", "user", "x" * 70]))
# Mostly values a field would take (so that bodies get past validation), sometimes any 64-bit one.
INTEGERS = st.one_of(st.integers(1, 64), st.integers(-3, 5000), st.integers(INT64_MIN, INT64_MAX))
NUMBERS = st.one_of(st.floats(0.0, 1.0), st.floats(-2.0, 2.0), st.floats(allow_nan=False, allow_infinity=False))
FREE_JSON: st.SearchStrategy[Json] = st.recursive(
    st.one_of(st.none(), st.booleans(), INTEGERS, NUMBERS, TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
# Free-form objects (function `parameters`, `text.format.schema`) are JSON Schemas: make some look like one.
SCHEMA_TYPES = st.sampled_from(["object", "string", "integer", "number", "array", "boolean", "null", "nope"])
JSON_SCHEMA_LIKE: st.SearchStrategy[Json] = st.recursive(
    st.fixed_dictionaries({"type": SCHEMA_TYPES | st.lists(SCHEMA_TYPES, max_size=2)}, optional={
        "pattern": st.sampled_from(["^a+$", "(", "[", "\\", "(?P<x>", "a{99999999999}", "\\p{L}", "(?i)x"]),
        "format": st.sampled_from(["date-time", "email", "uri", "regex"]) | TEXT,
        "enum": st.lists(FREE_JSON, min_size=1, max_size=3), "minimum": INTEGERS | NUMBERS, "maxLength": INTEGERS,
        "$ref": st.sampled_from(["#", "#/definitions/x", "#/$defs/missing", "http://127.0.0.1:1/x", "x.json"]),
        "additionalProperties": st.booleans(), "required": st.lists(TEXT, min_size=1, max_size=2, unique=True),
    }),
    lambda inner: st.fixed_dictionaries({"type": st.just("object"),
                                         "properties": st.dictionaries(TEXT, inner, max_size=3)},
                                        optional={"items": inner, "anyOf": st.lists(inner, max_size=2)}),
    max_leaves=4,
)
# `text` and `tools` with a JSON Schema in them, more often than the SDK's types alone would give.
TEXT_FORMATS = st.sampled_from([OMIT, OMIT, FROM_SCHEMA]) | st.fixed_dictionaries({"format": st.fixed_dictionaries(
    {"type": st.just("json_schema"), "name": st.just("out"), "schema": JSON_SCHEMA_LIKE},
    optional={"strict": st.booleans()})})
# `prompt` naming the stored template ({{tone}} and {{topic}}): variables are text, content parts or anything.
PROMPTS = st.sampled_from([OMIT] * 4 + [FROM_SCHEMA]) | st.fixed_dictionaries({"id": st.just(PROMPT_ID)}, optional={
    "variables": st.dictionaries(st.sampled_from(["tone", "topic"]) | TEXT, st.one_of(
        TEXT, FREE_JSON, st.sampled_from([{"type": "input_text", "text": "x"}, {"type": "input_file", "file_id": "f"},
                                          {"type": "input_image", "image_url": "http://[::1]/"}]).map(copy.deepcopy)),
        max_size=3),
    "version": st.sampled_from(["1", "2", "0", "-1", str(2**64), "x", ""])})
TOOLS = st.sampled_from([OMIT, OMIT, FROM_SCHEMA]) | st.lists(st.fixed_dictionaries(
    {"type": st.just("function"), "name": st.sampled_from(["f", "g"]), "parameters": JSON_SCHEMA_LIKE},
    optional={"strict": st.booleans()}), min_size=1, max_size=2, unique_by=lambda tool: tool["name"])


# ---------------------------------------------------------------- the schema interpreter

class _Drawer:
    """Draws one value of a JSON Schema node (pydantic's output: $ref/$defs, anyOf, const, enum, type)."""

    def __init__(self, draw: st.DrawFn, defs: dict[str, Schema], max_depth: int) -> None:
        self.draw, self.defs, self.max_depth = draw, defs, max_depth

    def value(self, node: Schema, depth: int) -> Json:
        while "$ref" in node:
            node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return self.draw(st.sampled_from(node["enum"]))
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            return self.value(self.draw(st.sampled_from(options)), depth)
        kind = node.get("type")
        if isinstance(kind, list):
            kind = self.draw(st.sampled_from(kind))
        if kind == "object":
            return self.object(node, depth, {})
        if kind == "array":
            size = self.draw(st.integers(0, 0 if depth >= self.max_depth else 3))
            return [self.value(node.get("items", {}), depth + 1) for _ in range(size)]
        leaf = {"string": TEXT, "integer": INTEGERS, "number": NUMBERS, "boolean": st.booleans(),
                "null": st.none()}.get(kind or "", FREE_JSON)
        return self.draw(leaf)

    def object(self, node: Schema, depth: int, overrides: dict[str, st.SearchStrategy[Any]],
               always: tuple[str, ...] = ()) -> dict[str, Json]:
        properties: dict[str, Schema] = node.get("properties", {})
        required = {*node.get("required", ()), *always}
        out: dict[str, Json] = {}
        for name, sub in properties.items():
            if name in overrides:
                value = self.draw(overrides[name])
                if value is FROM_SCHEMA:
                    out[name] = self.value(sub, depth + 1)
                elif value is not OMIT:
                    out[name] = value
            elif name in required or (depth < self.max_depth and self.draw(st.integers(0, 5)) == 5):
                out[name] = self.value(sub, depth + 1)
        extra = node.get("additionalProperties")
        if not properties and isinstance(extra, dict):
            for key in self.draw(st.lists(TEXT, max_size=0 if depth >= self.max_depth else 3, unique=True)):
                out[key] = self.value(extra, depth + 1)
        elif not properties:  # free-form: any object, often a JSON Schema
            out = self.draw(st.dictionaries(TEXT, FREE_JSON, max_size=3) | JSON_SCHEMA_LIKE)
        return out


def bodies(schema: Schema, overrides: dict[str, st.SearchStrategy[Any]], always: tuple[str, ...] = (),
           max_depth: int = 4) -> st.SearchStrategy[Json]:
    """Objects valid under `schema` (as the SDK would type them): `overrides` draw top-level properties
    themselves, the `always` ones are drawn from the schema but never left out."""

    @st.composite
    def draw_body(draw: st.DrawFn) -> Json:
        return _Drawer(draw, schema.get("$defs", {}), max_depth).object(schema, 0, overrides, always)

    return draw_body()


def discriminators(schema: Schema) -> list[str]:
    """Every `type` constant of the schema: real tags, to be put where they do not belong."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            tag = node.get("properties", {}).get("type", {})
            if isinstance(tag, dict) and isinstance(tag.get("const"), str):
                found.add(tag["const"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return sorted(found)


# ---------------------------------------------------------------- hostile mutations

def _nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


HOSTILE_LEAVES: list[Json] = [
    Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("-1e999"), Raw("1E+400"), Raw("-0"),
    Raw("1e-400"), Raw("0.1e1"), 2**63, 2**64, INT64_MIN - 1, 10**40, -(10**40),
    Raw("9" * 5000),  # past Python's int <-> str digit limit (4300)
    Raw('"\\ud800"'), Raw('"a\\udfffb"'), Raw('"\\ud83d"'), Raw('"\\u0000"'), Raw('"\\ude00\\ud83d"'),
    _nested(100), _nested(2000), _nested(100_000), Raw('{"a":' * 300 + "1" + "}" * 300),
    "", " ", "x" * 100_000, "\x00", "\u202e\u0000\uffff", "💩" * 1000, -1, 0, 1, 1.5, True, False, None, [], {},
    [None], {"": None}, "unknown",
]
KEYS = TEXT | st.sampled_from(["\ud800", "type", "__proto__", "x" * 1000, "a.b", "0"])
# Copied: a drawn {} or [] may be changed by a later mutation, and must not change the constants.
HOSTILE = st.one_of(st.sampled_from(HOSTILE_LEAVES).map(copy.deepcopy), FREE_JSON)


def hostile_tags(schema: Schema) -> st.SearchStrategy[Json]:
    """What a discriminator (`type`) must survive: lists, objects, numbers, unknown and misplaced tags."""
    return st.one_of(
        st.sampled_from([["message"], {"type": "message"}, ["function"], {}, [], 1, 1.5, True, None, "", "MESSAGE",
                         "message\x00", Raw("NaN"), Raw('"\\ud800"'), 2**64, "x" * 10_000]).map(copy.deepcopy),
        st.sampled_from(discriminators(schema)),
        TEXT,
    )


def _places(node: Json) -> Iterator[tuple[dict[str, Json] | list[Json], Any]]:
    """Every (container, key) of a value, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _places(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _places(value)


def _objects(node: Json) -> list[dict[str, Json]]:
    found = [node] if isinstance(node, dict) else []
    return found + [c[k] for c, k in _places(node) if isinstance(c[k], dict)]


def mutated(schema: Schema, base: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    """A schema-shaped body with one to three hostile changes."""
    tags = hostile_tags(schema)

    @st.composite
    def draw_mutated(draw: st.DrawFn) -> Json:
        body = copy.deepcopy(draw(base))
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["replace", "tag", "add", "delete", "root"]))
            places = list(_places(body))
            objects = _objects(body)
            if kind == "replace" and places:
                container, key = draw(st.sampled_from(places))
                container[key] = draw(HOSTILE)
            elif kind == "tag":
                tagged = [o for o in objects if "type" in o] or objects
                if tagged:
                    draw(st.sampled_from(tagged))["type"] = draw(tags)
            elif kind == "add" and objects:
                draw(st.sampled_from(objects))[draw(KEYS)] = draw(HOSTILE)
            elif kind == "delete" and objects:
                target = draw(st.sampled_from(objects))
                if target:
                    del target[draw(st.sampled_from(sorted(target)))]
            elif kind == "root":
                body = draw(st.one_of(HOSTILE, st.lists(st.just(body), max_size=2)))
        return body

    return draw_mutated()


# ---------------------------------------------------------------- writing bodies

def _string(text: str, ascii_only: bool) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:
        ascii_only = True  # a lone surrogate can only be written as an escape
    return json.dumps(text, ensure_ascii=ascii_only)


def to_json(value: Json, ascii_only: bool = False) -> str:
    """JSON text of a value that may hold Raw parts and integers of any size."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(str(k), ascii_only)}:{to_json(v, ascii_only)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, ascii_only)
    return json.dumps(value)


BROKEN_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80", b"\x00"]


def broken(base: st.SearchStrategy[Json]) -> st.SearchStrategy[bytes]:
    """Bytes that are not a JSON text: cut, spliced with invalid UTF-8 or garbage, empty, a BOM, two values."""

    @st.composite
    def draw_broken(draw: st.DrawFn) -> bytes:
        text = to_json(draw(base)).encode()
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["cut", "utf8", "garbage", "bom", "twice", "empty", "trailing"]))
        if kind == "cut":
            return text[:at]
        if kind == "utf8":
            return text[:at] + draw(st.sampled_from(BROKEN_BYTES)) + text[at:]
        if kind == "garbage":
            return text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at:]
        if kind == "bom":
            return b"\xef\xbb\xbf" + text
        if kind == "twice":
            return text + text
        if kind == "trailing":
            return text + draw(st.sampled_from([b",", b"}", b" x", b"\x00", b"//c", b"\n\n"]))
        return draw(st.sampled_from([b"", b" ", b"\n", b"null", b"{", b"[", b'"', b"\xff\xfe{\x00}\x00"]))

    return draw_broken()


# ---------------------------------------------------------------- query strings

QUERY_NAMES = ["limit", "order", "after", "before", "include[]", "include", "stream", "starting_after"]
NUMERALS = [  # what a number in a query string or path may look like: out of range, not ASCII, not a number
    "", "0", "1", "-1", "2", "20", "100", "101", str(INT64_MAX), str(2**63), str(2**64), str(10**30), str(INT64_MIN),
    str(INT64_MIN - 1), "\u00b2", "\u0661\u0662", "\uff11\uff12", "1.5", "1e3", " 1", "+1", "0x10", "0" * 22 + "1",
    "true", "false", "TRUE", "maybe", "asc", "desc", "ASC", "message.output_text.logprobs",
    "reasoning.encrypted_content", "a,b,,", "%", "%ff", "%zz", "\x00", "NaN", "Infinity",
]
QUERY_VALUES = st.one_of(st.sampled_from([*NUMERALS, *PLACEHOLDERS]), TEXT)
# Half the time a value meant for the name (so that e.g. `stream=true&starting_after=...` replays happen).
VALUES_BY_NAME = {
    "stream": st.sampled_from(["true", "true", "1", "false", "0", "TRUE", "maybe", ""]),
    "order": st.sampled_from(["asc", "desc", "ASC", "", "random"]),
    "include[]": st.sampled_from(["message.output_text.logprobs", "reasoning.encrypted_content", "bogus", ""]),
    "after": st.sampled_from([*PLACEHOLDERS, "msg_missing", ""]),
}


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """`a=b&...`: known and unknown names, repeated, empty, without `=`, percent-encoded or not."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(QUERY_NAMES) | TEXT)
        value = draw(VALUES_BY_NAME.get(name, QUERY_VALUES) | QUERY_VALUES)
        style = draw(st.sampled_from(["encoded", "verbatim", "bare"]))
        if style == "bare":
            parts.append(quote(name, safe="[]"))
        elif style == "verbatim" and value.isprintable() and not set(value) & set("&#? "):
            parts.append(f"{quote(name, safe='[]')}={value}")
        else:
            parts.append(f"{quote(name, safe='[]')}={quote(value, safe='')}")
    return "&".join(parts)


PATH_IDS = st.one_of(st.sampled_from([*PLACEHOLDERS, "resp_missing", "conv_missing", "x" * 5000, "%2F",
                                      "%00", "%ff", "%C2%B2", "a%20b"]),
                     st.sampled_from(NUMERALS).map(lambda s: quote(s, safe="")),
                     TEXT.filter(lambda s: s != "").map(lambda s: quote(s, safe="")))
