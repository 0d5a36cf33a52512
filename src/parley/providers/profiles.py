"""Endpoint profiles: the quirks of each OpenAI-compatible Chat Completions server, as data.

A profile is chosen per model in the config (`profile = "vllm"`) and single flags can be overridden
(`quirks = {stream_usage = false}`). Code never branches on the provider's name, only on these flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from parley.config import ProfileName, ProfileOverrides, TokenizerName


@dataclass(frozen=True, slots=True)
class Profile:
    # Role used for `developer` messages. Most open servers only know system/user/assistant/tool.
    developer_role: Literal["developer", "system"] = "system"
    # OpenAI renamed max_tokens to max_completion_tokens; open servers accept max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Whether `stream_options.include_usage` yields a final usage chunk.
    stream_usage: bool = True
    # Field carrying reasoning text in deltas/messages (vLLM/DeepSeek: reasoning_content; OpenRouter: reasoning).
    reasoning_field: str | None = "reasoning_content"
    # Whether earlier reasoning is sent back on the following assistant message (in `reasoning_field`).
    reasoning_passback: bool = False
    # Whether `reasoning_effort` is accepted.
    reasoning_effort: bool = False
    # Whether tool_choice "required" / a named function are honoured natively. When not, Parley offers the
    # tools with "auto" and fails a turn that breaks tool_choice (engine/checks.py).
    tool_choice_required: bool = True
    tool_choice_named: bool = True
    service_tier: bool = False
    # Whether `user` / `safety_identifier` may be forwarded.
    user_field: bool = True
    prompt_cache_key: bool = False
    # Send text-only content as a plain string (some servers reject content arrays).
    text_parts_as_string: bool = True
    logprobs: bool = True
    # Whether the model takes images (input_image parts, computer-use screenshots); without, they are a 400.
    vision: bool = True
    # Whether file inputs go as Chat Completions `file` parts (base64 `file_data`, OpenAI's form); otherwise the
    # model gets the file's extracted text (services/file_inputs.py).
    files: bool = False
    # An assistant message that only carries tool_calls says `"content": null` (OpenAI's form). Servers whose
    # request schema types content as a string (llama-cpp-python: `content: NotRequired[str]`) get "" instead.
    tool_call_content_null: bool = True
    json_schema: bool = True
    # How a JSON schema is requested: OpenAI's {"type":"json_schema","json_schema":{...}} or the
    # {"type":"json_object","schema":{...}} form that llama-cpp-python turns into a decoding grammar.
    json_schema_format: Literal["json_schema", "json_object_schema"] = "json_schema"
    # How input tokens are counted (providers/tokens.py): "tiktoken:<encoding>" offline; "vllm" (POST /tokenize)
    # or "llamacpp" (POST /extras/tokenize/count) ask the server's own tokenizer; "estimate" is a heuristic.
    tokenizer: TokenizerName = "estimate"

    def with_overrides(self, overrides: ProfileOverrides) -> Profile:
        changes = {k: v for k, v in overrides.model_dump().items() if v is not None}
        return dataclasses.replace(self, **changes)


PROFILES: dict[ProfileName, Profile] = {
    "generic": Profile(),
    # https://platform.openai.com/docs/api-reference/chat/create
    "openai": Profile(
        developer_role="developer", max_tokens_field="max_completion_tokens", reasoning_field=None,
        reasoning_effort=True, service_tier=True, prompt_cache_key=True, text_parts_as_string=False,
        # https://platform.openai.com/docs/guides/pdf-files (Chat Completions `file` parts with file_data)
        files=True,
        # https://github.com/openai/tiktoken (gpt-4o, gpt-4.1, o-series, gpt-5 use o200k_base)
        tokenizer="tiktoken:o200k_base",
    ),
    # https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html (reasoning parsers emit reasoning_content;
    # the Tokenizer API `POST /tokenize` applies the chat template to `messages`)
    "vllm": Profile(reasoning_field="reasoning_content", tokenizer="vllm"),
    # https://github.com/ollama/ollama/blob/main/docs/openai.md (usage chunk supported since 0.5; no logprobs)
    "ollama": Profile(reasoning_field="reasoning", logprobs=False, tool_choice_required=False,
                      tool_choice_named=False),
    # llama.cpp server / llama-cpp-python: no usage chunk when streaming; grammar-backed json_schema.
    # llama-cpp-python's server tokenizes raw text at POST /extras/tokenize[/count] (no chat template).
    # (llama-cpp-python enforces a named tool_choice and json_object+schema with a grammar, but not "required")
    # (llama-cpp-python's ChatCompletionRequestAssistantMessage types content as str: null was a 500 listing
    # seven validation errors, one per message type of the union)
    "llamacpp": Profile(stream_usage=False, reasoning_field="reasoning_content", tokenizer="llamacpp",
                        tool_choice_required=False, json_schema_format="json_object_schema",
                        tool_call_content_null=False),
    # https://openrouter.ai/docs/api-reference/chat-completion (reasoning in `reasoning`)
    "openrouter": Profile(reasoning_field="reasoning", reasoning_effort=True),
    # https://api-docs.deepseek.com/guides/reasoning_model (reasoning_content; no tool_choice=required)
    # (deepseek-reasoner wants reasoning_content passed back within a tool-calling turn)
    "deepseek": Profile(reasoning_field="reasoning_content", tool_choice_required=False, tool_choice_named=False,
                        logprobs=False,
                        reasoning_passback=True),
}


def resolve_profile(name: ProfileName, overrides: ProfileOverrides) -> Profile:
    return PROFILES[name].with_overrides(overrides)
