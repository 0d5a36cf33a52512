"""JSON schemas as llama.cpp grammars, for the embedded model's child process (embedded_server.py).

llama-cpp-python converts a JSON schema into a GBNF grammar (llama_grammar.SchemaConverter) that llama.cpp
samples under, so even a 135M model writes JSON that parses and matches. As shipped (0.3.36) it was not
enough: its `char` rule lets a string hold raw control characters (SmolLM2 wrote raw newlines inside
argument strings: invalid JSON), it ignores keywords it cannot express (`minimum`, `allOf`, most `format`s,
`type` lists beside other keywords...) and falls back to any JSON when it fails, and a grammar llama.cpp
cannot parse (from a pattern such as `^\\d{3}$`) made the child segfault. Here:

- `char` is JSON's: no raw control characters, `"` or `\\` outside an escape (RFC 8259, section 7);
- a schema with a keyword the converter cannot express is refused by name (`Unsupported`: a 400 naming
  where), never sampled unconstrained; `type` lists become `anyOf` branches, which it does express;
- the grammar is parsed by llama.cpp once here, so an unparsable one is a 400 rather than a crash;
- `$ref` rules are named by their whole path (the converter named them by the last segment, so two
  definitions with one name shared a rule);
- each distinct request (forced function, choice of functions, text format) is converted once
  (`GrammarCache`); a request repeating it reuses the grammar.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp
from llama_cpp.llama_grammar import INVALID_RULE_CHARS_RE, BuiltinRule, LlamaGrammar, SchemaConverter

Schema = dict[str, Any]
Kind = Literal["arguments", "choice", "text"]

# A JSON string's character: anything but `"`, `\` and control characters, or an escape.
_JSON_CHAR = BuiltinRule(r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})', [])
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
# Validation keywords the converter does not express (it ignores them: the output would not be held to them).
_REFUSED = {
    **dict.fromkeys(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"), "number bounds"),
    **dict.fromkeys(("not", "if", "then", "else", "allOf", "dependentSchemas", "dependencies"), "this combinator"),
    **dict.fromkeys(("uniqueItems", "contains", "minContains", "maxContains", "unevaluatedItems", "additionalItems"),
                    "this array keyword"),
    **dict.fromkeys(("patternProperties", "propertyNames", "minProperties", "maxProperties", "dependentRequired",
                     "unevaluatedProperties"), "this object keyword"),
    **dict.fromkeys(("$dynamicRef", "$recursiveRef"), "dynamic references"),
}
# Keywords that constrain a value, as the converter reads them; anything else is an annotation to it and to
# Parley's validator (title, description, default, examples, $schema, $comment, ...).
_CONSTRAINING = frozenset({"type", "enum", "const", "properties", "required", "additionalProperties", "items",
                           "prefixItems", "minItems", "maxItems", "pattern", "format", "minLength", "maxLength",
                           "anyOf", "oneOf", "$ref", *_REFUSED})
_DEFS = ("$defs", "definitions")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),),
    "object": (dict,), "array": (list,),
}
_PATTERN_REFUSED = (".", "\\", '"', "[^")


class Unsupported(Exception):
    """A schema the grammar cannot hold the output to: `where` is its path inside the schema."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{message} (at {where or 'the root'})")
        self.where = where
        self.message = message


def _at(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def _of_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(kind, ()))


def normalise(schema: Any, path: str = "") -> Schema:
    """The schema as the converter can take it, or Unsupported naming the first keyword it cannot express."""
    if not isinstance(schema, dict):
        raise Unsupported(path, "a boolean schema is not supported; write an object schema")
    kind = schema.get("type")
    if isinstance(kind, list):  # {"type": [a, b], ...} is {"anyOf": [{"type": a, ...}, {"type": b, ...}]}
        annotations = {k: v for k, v in schema.items() if k not in _CONSTRAINING or k in _DEFS}
        branches = [_branch(schema, t) for t in kind]
        return normalise({**annotations, "anyOf": [b for b in branches if b is not None]}, path)
    for key in schema:
        if key in _REFUSED:
            raise Unsupported(_at(path, key), f"'{key}' ({_REFUSED[key]}) is not supported")
    out = dict(schema)
    constraining = {k for k in schema if k in _CONSTRAINING and k not in _DEFS}
    for combinator in ("$ref", "anyOf", "oneOf"):
        if combinator in schema:
            others = sorted(constraining - {combinator})
            if others:
                raise Unsupported(_at(path, others[0]), f"'{others[0]}' beside '{combinator}' is not supported")
    if "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsupported(_at(path, "$ref"), "only references within the schema ('#/...') are supported")
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            branches = schema[combinator]
            if not isinstance(branches, list) or not branches:
                raise Unsupported(_at(path, combinator), f"'{combinator}' needs a non-empty list")
            out[combinator] = [normalise(b, _at(_at(path, combinator), i)) for i, b in enumerate(branches)]
    if "enum" in schema or "const" in schema:
        _check_values(schema, path, kind, constraining)
    _check_strings(schema, path, kind)
    _check_arrays(schema, path, out)
    _check_objects(schema, path, out)
    for defs in _DEFS:
        if isinstance(schema.get(defs), dict):
            out[defs] = {k: normalise(v, _at(_at(path, defs), k)) for k, v in schema[defs].items()}
    return out


def _branch(schema: Schema, kind: Any) -> Schema | None:
    """One type of a `type` list with the keywords beside it; enum/const values of other types left out."""
    branch = {k: v for k, v in schema.items() if k in _CONSTRAINING and k not in _DEFS}
    branch["type"] = kind
    if "enum" in branch and isinstance(branch["enum"], list):
        branch["enum"] = [v for v in branch["enum"] if isinstance(kind, str) and _of_type(v, kind)]
        if not branch["enum"]:
            return None
    if "const" in branch and not (isinstance(kind, str) and _of_type(branch["const"], kind)):
        return None
    return branch


def _check_values(schema: Schema, path: str, kind: Any, constraining: set[str]) -> None:
    key = "const" if "const" in schema else "enum"
    values = [schema["const"]] if key == "const" else schema["enum"]
    if not isinstance(values, list) or not values:
        raise Unsupported(_at(path, key), "'enum' needs a non-empty list")
    others = sorted(constraining - {"enum", "const", "type"})
    if others:
        raise Unsupported(_at(path, others[0]), f"'{others[0]}' beside '{key}' is not supported")
    if isinstance(kind, str) and not all(_of_type(v, kind) for v in values):
        raise Unsupported(_at(path, key), f"a value of '{key}' is not of type '{kind}'")
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise Unsupported(_at(path, key), "a value is not a finite number")


def _check_strings(schema: Schema, path: str, kind: Any) -> None:
    pattern, fmt = schema.get("pattern"), schema.get("format")
    if pattern is not None:
        if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
            raise Unsupported(_at(path, "pattern"), "a pattern must match the whole string (^...$)")
        if any(part in pattern for part in _PATTERN_REFUSED) or any(ord(c) < 0x20 for c in pattern):
            raise Unsupported(_at(path, "pattern"), "a pattern with '.', '\\', '\"' or a negated class [^...] "
                              "is not supported (its grammar could write characters a JSON string must escape)")
        if fmt is not None:
            raise Unsupported(_at(path, "format"), "'format' beside 'pattern' is not supported")
    if fmt is not None and kind in (None, "string") and fmt not in _FORMATS:
        raise Unsupported(_at(path, "format"), f"format '{fmt}' is not supported (only {', '.join(sorted(_FORMATS))})")
    for key in ("minLength", "maxLength"):
        if key in schema and (kind != "string" or pattern is not None or fmt is not None):
            raise Unsupported(_at(path, key), f"'{key}' is supported only with \"type\": \"string\", without "
                              "'pattern' or 'format'")


def _check_arrays(schema: Schema, path: str, out: Schema) -> None:
    items, prefix = schema.get("items"), schema.get("prefixItems")
    if prefix is not None:
        if not isinstance(prefix, list) or not prefix:
            raise Unsupported(_at(path, "prefixItems"), "'prefixItems' needs a non-empty list")
        if items not in (None, False) or "minItems" in schema or "maxItems" in schema:
            key = "items" if items not in (None, False) else "minItems" if "minItems" in schema else "maxItems"
            raise Unsupported(_at(path, key), f"'{key}' beside 'prefixItems' is not supported")
        out["prefixItems"] = [normalise(s, _at(_at(path, "prefixItems"), i)) for i, s in enumerate(prefix)]
        out.pop("items", None)
        return
    if items is not None:
        out["items"] = normalise(items, _at(path, "items"))
    for key in ("minItems", "maxItems"):
        if key in schema and items is None:
            raise Unsupported(_at(path, key), f"'{key}' is supported only with 'items'")


def _check_objects(schema: Schema, path: str, out: Schema) -> None:
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise Unsupported(_at(path, "properties"), "'properties' must be an object")
        out["properties"] = {k: normalise(v, _at(_at(path, "properties"), k)) for k, v in properties.items()}
    required = schema.get("required")
    if required is not None:
        missing = [name for name in required if name not in (properties or {})] if isinstance(required, list) else [0]
        if missing:
            raise Unsupported(_at(path, "required"), f"required property '{missing[0]}' is not in 'properties'")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = normalise(extra, _at(path, "additionalProperties"))


class _Converter(SchemaConverter):
    """llama-cpp-python's converter with JSON's string characters and `$ref` rules named by their whole path."""

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        return str(super()._add_primitive(name, _JSON_CHAR if name == "char" else rule))

    def _resolve_ref(self, ref: str) -> str:
        name = INVALID_RULE_CHARS_RE.sub("-", "ref-" + ref)
        if name not in self._rules and ref not in self._refs_being_resolved:
            self._refs_being_resolved.add(ref)
            name = self.visit(self._refs[ref], name)  # type: ignore[no-untyped-call]
            self._refs_being_resolved.remove(ref)
        return name


def _new_converter() -> _Converter:
    return _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]


def _convert(converter: _Converter, schema: Schema, base: str, name: str) -> str:
    if "$ref" in schema:  # the converter does not look beside a `$ref` for the definitions it names
        schema = {**{k: v for k, v in schema.items() if k != "$ref"}, "anyOf": [{"$ref": schema["$ref"]}]}
    try:
        converter.resolve_refs(schema, base)
        return str(converter.visit(schema, name))  # type: ignore[no-untyped-call]
    except Unsupported:
        raise
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise Unsupported("", f"llama.cpp's converter cannot express it ({type(exc).__name__}: {exc})") from None


def _parsed(grammar: str) -> LlamaGrammar:
    """The grammar once llama.cpp parsed it (one it cannot parse would crash the sampler)."""
    sampler = llama_cpp.llama_sampler_init_grammar(None, grammar.encode(), b"root")
    if not sampler:
        raise Unsupported("", "llama.cpp cannot parse the grammar made from it")
    llama_cpp.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(grammar, verbose=False)


@dataclass(frozen=True, slots=True)
class Constraint:
    """How one request is decoded: its grammar, and what the output is (a function's arguments, a choice of
    function `{"name": ..., "arguments": ...}`, or the message text)."""

    kind: Kind
    grammar: LlamaGrammar
    function: str | None = None  # kind "arguments": the function's name
    functions: tuple[str, ...] = ()  # kind "choice": the names it chooses among


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request whose schema cannot become a grammar: `param` names it in the Chat Completions request."""

    param: str
    message: str


def arguments_grammar(parameters: Schema) -> str:
    converter = _new_converter()
    _convert(converter, normalise(parameters), "input", "")
    return str(converter.format_grammar())  # type: ignore[no-untyped-call]


def choice_head(name: str) -> str:
    """What a choice's output starts with once the model chose `name`; its arguments follow, then `}`."""
    return '{"name": ' + json.dumps(name) + ', "arguments": '


def choice_grammar(functions: list[tuple[str, Schema]]) -> str:
    """`{"name": <one of the functions>, "arguments": <its parameters>}`, the name first."""
    converter = _new_converter()
    alternatives = []
    for index, (name, parameters) in enumerate(functions):
        rule = _convert(converter, normalise(parameters), f"function{index}", f"function{index}-arguments")
        head = converter._format_literal(choice_head(name))  # type: ignore[no-untyped-call]
        alternatives.append(f'{head} {rule} "}}"')
    converter._add_rule("root", " | ".join(alternatives))  # type: ignore[no-untyped-call]
    return str(converter.format_grammar())  # type: ignore[no-untyped-call]


def text_grammar(schema: Schema | None) -> str:
    converter = _new_converter()
    _convert(converter, normalise(schema if schema is not None else {"type": "object"}), "input", "")
    return str(converter.format_grammar())  # type: ignore[no-untyped-call]


class GrammarCache:
    """Constraints by request, least recently used dropped beyond `size`; refusals are remembered too. Used from
    the server's event loop (GrammarGate) and its worker threads (the chat handler): one lock."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: OrderedDict[str, Constraint | Refusal] = OrderedDict()
        self._lock = threading.Lock()
        self.built = 0  # conversions done (a hit does none)

    def constraint(self, tools: Any, tool_choice: Any, response_format: Any) -> Constraint | Refusal | None:
        """The constraint of a Chat Completions request (its `tools`, `tool_choice`, `response_format`), None
        when it is decoded freely."""
        plan = _plan(tools, tool_choice, response_format)
        if plan is None:
            return None
        key = json.dumps(plan, sort_keys=True, separators=(",", ":"))
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
            made = _build(plan)
            self.built += 1
            self._entries[key] = made
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
            return made


def _functions(tools: Any) -> list[tuple[int, str, Any]]:
    found = []
    for index, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            found.append((index, function["name"], function.get("parameters") or {"type": "object", "properties": {}}))
    return found


def _plan(tools: Any, tool_choice: Any, response_format: Any) -> list[Any] | None:
    """What decides the grammar, as plain JSON (the cache key)."""
    functions = _functions(tools)
    if isinstance(tool_choice, dict) and functions:
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [f for f in functions if f[1] == name]
        return ["arguments", [list(f) for f in chosen[:1]] or [[-1, name, None]]]
    if tool_choice == "required" and functions:
        return ["choice", [list(f) for f in functions]]
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        return ["text", response_format.get("schema")]
    return None


def _build(plan: list[Any]) -> Constraint | Refusal:
    kind, spec = plan
    try:
        if kind == "text":
            param = "response_format.schema"
            return Constraint("text", _parsed(text_grammar(spec)))
        if kind == "arguments":
            [[index, name, parameters]] = spec
            if parameters is None:
                return Refusal("tool_choice", f"tool_choice names '{name}', which is not among the tools")
            param = f"tools[{index}].function.parameters"
            return Constraint("arguments", _parsed(arguments_grammar(parameters)), name)
        for index, _name, parameters in spec:  # each function's own error names it
            param = f"tools[{index}].function.parameters"
            _convert(_new_converter(), normalise(parameters), "input", "")
        param = "tools"
        grammar = _parsed(choice_grammar([(name, parameters) for _i, name, parameters in spec]))
        return Constraint("choice", grammar, functions=tuple(name for _i, name, _p in spec))
    except Unsupported as err:
        where = f" (at {err.where})" if err.where else ""
        return Refusal(param, f"The embedded model decodes under a grammar (llama.cpp), which cannot hold its "
                              f"output to this schema{where}: {err.message}.")
