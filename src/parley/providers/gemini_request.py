"""Canonical model call -> a Gemini `generateContent` request (https://ai.google.dev/api/generate-content).

- `instructions` and leading system/developer messages -> `systemInstruction`; later ones become user text.
  Roles are `user` and `model`; items of one role in a row share a content.
- Text, images (data URLs inline, other URLs as `fileData`), resolved PDFs and images as `inlineData` (other
  files as their extracted text; `files = false` sends text always).
- Function and custom tools -> `functionDeclarations` (full JSON Schema in `parametersJsonSchema`); tool_choice
  auto/required/none/named -> `functionCallingConfig` AUTO/ANY/NONE/ANY + allowedFunctionNames. A call's
  output is a `functionResponse` named after its call, `{"result": <text>}`; call ids go both ways.
- `reasoning.effort` -> `thinkingConfig.thinkingBudget` with `includeThoughts` (thought summaries become
  reasoning text). Thought signatures (https://ai.google.dev/gemini-api/docs/thought-signatures) are kept as
  the reasoning items' upstream state, each saying which part carried it (a function call by id, the turn's
  text, or a part of its own), and go back on the same part of the same model turn: the first function call
  of a turn must carry its signature on Gemini 3.
- `text.format` json_schema -> `responseMimeType: application/json` + `responseJsonSchema`; json_object ->
  the MIME type alone. Output is validated by engine/checks.py as for every upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.providers.base import Item, ModelCall
from parley.providers.native_items import (
    arguments_object,
    data_url,
    file_text,
    guessed_media_type,
    image_url,
    output_text,
    unsupported_item,
    unsupported_part,
    upstream_call_name,
    upstream_state,
)
from parley.providers.native_profiles import NativeProfile
from parley.providers.prefix_memo import PrefixMemo

KIND = "gemini"
Part = dict[str, Any]
# reasoning.effort -> thinkingBudget (https://ai.google.dev/gemini-api/docs/thinking: 0 turns thinking off where
# the model allows it; 24576 is 2.5 Flash's largest budget).
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
_MODEL_SIDE = frozenset({"function_call", "custom_tool_call", "reasoning"})
# Gemini 3 refuses a turn whose first function call comes back without its signature; a call that never had one
# here (made by another model, or resent by a client that kept no encrypted_content) carries the value the docs
# give for such calls (https://ai.google.dev/gemini-api/docs/thought-signatures, FAQ).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_INLINE_FILES = ("application/pdf", "image/")


def _image(part: Item, path: str, profile: NativeProfile) -> Part:
    url = image_url(part, path, profile.vision)
    inline = data_url(url, f"{path}.image_url")
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    return {"fileData": {"mimeType": guessed_media_type(url, "image/jpeg"), "fileUri": url}}


def _part(part: Item, path: str, profile: NativeProfile) -> Part | None:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"text": part["text"]} if part["text"] else None
    if kind == "refusal":
        return {"text": part["refusal"]} if part["refusal"] else None
    if kind == "input_image":
        return _image(part, path, profile)
    if kind == "input_file" and "text" in part:  # resolved by services/file_inputs.py
        inline = data_url(str(part["file_data"]), f"{path}.file_data") if profile.files else None
        if inline is not None and inline[0].startswith(_INLINE_FILES):
            return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
        return {"text": file_text(part)}
    raise unsupported_part(kind, path)


def _parts(parts: list[Item], path: str, profile: NativeProfile) -> list[Part]:
    converted = (_part(p, f"{path}[{i}]", profile) for i, p in enumerate(parts))
    return [p for p in converted if p is not None]


@dataclass(frozen=True, slots=True)
class GeminiContents:
    """A call's translated contents as a PrefixMemo keeps them (providers/prefix_memo.py): as they stand after its
    last item, before the last turn's thought signatures are attached (those still pending are kept), with the
    instructions and upstream model they were made for (signatures go back only to the model that made them)."""

    instructions: str | None
    upstream_model: str
    contents: tuple[dict[str, Any], ...]
    system: tuple[Part, ...]
    call_names: tuple[tuple[str, str], ...]
    signatures: tuple[dict[str, Any], ...]


class _Contents:
    """The contents list; a model turn's thought signatures are attached when the turn is complete. Contents before
    `shared` belong to a memo: the last of them is copied before anything joins or marks it."""

    def __init__(self, start: GeminiContents | None = None) -> None:
        self.contents: list[dict[str, Any]] = list(start.contents) if start is not None else []
        self.system: list[Part] = list(start.system) if start is not None else []
        self.call_names: dict[str, str] = dict(start.call_names) if start is not None else {}
        self._signatures: list[dict[str, Any]] = list(start.signatures) if start is not None else []
        self.shared = len(self.contents)

    def kept(self, call: ModelCall) -> GeminiContents:
        """This state for a memo; what is added after it (the last turn's signatures) goes on copies."""
        self.shared = len(self.contents)
        return GeminiContents(call.instructions, call.upstream_model, tuple(self.contents), tuple(self.system),
                              tuple(self.call_names.items()), tuple(self._signatures))

    def _last(self) -> dict[str, Any]:
        """The last content, to change: a copy (its parts too) if a memo holds it."""
        if len(self.contents) == self.shared:
            last = self.contents[-1]
            self.contents[-1] = {**last, "parts": [dict(part) for part in last["parts"]]}
            self.shared -= 1
        return self.contents[-1]

    def add(self, role: str, parts: list[Part]) -> None:
        if role == "user":
            self.end_turn()
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self._last()["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": list(parts)})

    def signature(self, state: dict[str, Any]) -> None:
        self._signatures.append(state)

    def end_turn(self) -> None:
        signatures, self._signatures = self._signatures, []
        if signatures and (not self.contents or self.contents[-1]["role"] != "model"):
            self.contents.append({"role": "model", "parts": []})
        if not self.contents or self.contents[-1]["role"] != "model":
            return
        parts: list[Part] = self._last()["parts"]
        for sig in signatures:
            target = _target(parts, sig)
            if target is None:
                parts.append({"text": "", "thoughtSignature": sig["signature"]})
            else:
                target["thoughtSignature"] = sig["signature"]
        first_call = next((p for p in parts if "functionCall" in p), None)
        if first_call is not None and "thoughtSignature" not in first_call:
            first_call["thoughtSignature"] = SKIP_SIGNATURE


def _target(parts: list[Part], sig: dict[str, Any]) -> Part | None:
    """The part of the model turn a signature was given on (None: a part of its own)."""
    if sig.get("on") == "call":
        return next((p for p in parts if p.get("functionCall", {}).get("id") == sig.get("call_id")), None)
    if sig.get("on") == "text":
        return next((p for p in reversed(parts) if "text" in p and "thoughtSignature" not in p), None)
    return None


def _item(out: _Contents, item: Item, path: str, call: ModelCall, profile: NativeProfile) -> None:
    kind = item["type"]
    if kind == "message":
        parts = _parts(item["content"], f"{path}.content", profile)
        role = item["role"]
        if role in ("system", "developer") and not out.contents:
            out.system.extend(parts)
        else:
            out.add("model" if role == "assistant" else "user", parts)
    elif kind in ("function_call", "custom_tool_call"):
        name = upstream_call_name(item)
        out.call_names[item["call_id"]] = name
        out.add("model", [{"functionCall": {"id": item["call_id"], "name": name,
                                            "args": arguments_object(item, path)}}])
    elif kind in ("function_call_output", "custom_tool_call_output"):
        name = out.call_names.get(item["call_id"], "function")
        result = output_text(item["output"])
        out.add("user", [{"functionResponse": {"id": item["call_id"], "name": name, "response": {"result": result}}}])
    elif kind == "reasoning":
        state = upstream_state(item, KIND, call.upstream_model)
        if state is not None and state.get("signature"):
            out.signature(state)
    elif "upstream" not in item:
        raise unsupported_item(kind, path)


def _tool_config(call: ModelCall) -> dict[str, Any] | None:
    choice = call.tool_choice
    if isinstance(choice, dict):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}}
    modes = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}
    return None


def _generation_config(call: ModelCall) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in (("maxOutputTokens", call.max_output_tokens), ("temperature", call.temperature),
                       ("topP", call.top_p), ("presencePenalty", call.presence_penalty),
                       ("frequencyPenalty", call.frequency_penalty)):
        if value is not None:
            config[key] = value
    fmt = call.text_format or {}
    if fmt.get("type") in ("json_schema", "json_object"):
        config["responseMimeType"] = "application/json"
        if fmt.get("type") == "json_schema":
            config["responseJsonSchema"] = fmt["schema"]
    budget = THINKING_BUDGETS.get(call.reasoning_effort or "")
    if budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config


def gemini_path(call: ModelCall) -> str:
    model = call.upstream_model.removeprefix("models/")
    return f"/models/{model}:streamGenerateContent?alt=sse" if call.stream else f"/models/{model}:generateContent"


def _translate(call: ModelCall, profile: NativeProfile, memo: PrefixMemo[GeminiContents] | None) -> _Contents:
    """The call's contents; with a `memo`, from its first new item on."""
    hit = memo.find(call.items, lambda made: (made.instructions, made.upstream_model) == (
        call.instructions, call.upstream_model)) if memo is not None else None
    out = _Contents(hit.state if hit is not None else None)
    if hit is None and call.instructions:
        out.system.append({"text": call.instructions})
    for index in range(hit.start if hit is not None else 0, len(call.items)):
        item = call.items[index]
        if item["type"] not in _MODEL_SIDE and not (item["type"] == "message" and item["role"] == "assistant"):
            out.end_turn()
        _item(out, item, f"input[{index}]", call, profile)
    if memo is not None:
        memo.put(call.items, out.kept(call), hit, call.continuable)
    return out


def gemini_body(call: ModelCall, profile: NativeProfile, memo: PrefixMemo[GeminiContents] | None = None
                ) -> dict[str, Any]:
    """The generateContent body of `call`. With a `memo` (one per configured model), a call that extends one
    translated before is translated only from its first new item on."""
    out = _translate(call, profile, memo)
    out.end_turn()
    body: dict[str, Any] = {"contents": out.contents}
    if out.system:
        body["systemInstruction"] = {"parts": out.system}
    if call.tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t["name"], **({"description": t["description"]} if t.get("description") else {}),
             "parametersJsonSchema": t.get("parameters") or {"type": "object", "properties": {}}}
            for t in call.tools]}]
        tool_config = _tool_config(call)
        if tool_config is not None:
            body["toolConfig"] = tool_config
    config = _generation_config(call)
    if config:
        body["generationConfig"] = config
    return body
