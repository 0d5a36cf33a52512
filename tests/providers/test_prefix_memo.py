"""The memo of translated contexts (providers/prefix_memo.py, chat_request.chat_messages): a call that extends one
translated before gets exactly the messages a fresh translation gives, and earlier results are never changed."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from parley.config import ModelConfig, ProfileName, TokenizerName
from parley.engine.context_measure import ContextMeasures
from parley.errors import InvalidRequest
from parley.providers.anthropic_request import AnthropicMessages, anthropic_body
from parley.providers.base import ModelCall
from parley.providers.chat_completions import ReplyLimits
from parley.providers.chat_request import ChatMessages, chat_body, chat_messages
from parley.providers.gemini_request import GeminiContents, gemini_body
from parley.providers.http1 import Http1Pool
from parley.providers.native_profiles import NATIVE_PROFILES
from parley.providers.prefix_memo import PrefixMemo
from parley.providers.profiles import PROFILES
from parley.providers.redact import SecretMasker
from parley.providers.registry import UpstreamPolicy, build_provider
from parley.providers.responses_request import ResponsesInput, responses_input
from parley.providers.tokens import Encodings, MessagesCount, count_chat_tokens

Item = dict[str, Any]


def _user(n: int) -> Item:
    return {"id": f"msg_u{n}", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": f"question {n}"}]}


def _assistant(n: int) -> Item:
    return {"id": f"msg_a{n}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": f"answer {n}", "annotations": []}]}


def _reasoning(n: int) -> Item:
    return {"id": f"rs_{n}", "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": f"thinking {n}"}]}


def _call(n: int) -> Item:
    return {"id": f"fc_{n}", "type": "function_call", "call_id": f"call_{n}", "name": "lookup",
            "arguments": orjson.dumps({"n": n}).decode(), "status": "completed"}


def _output(n: int) -> Item:
    return {"id": f"fco_{n}", "type": "function_call_output", "call_id": f"call_{n}", "output": f"result {n}"}


def _turns() -> list[list[Item]]:
    """What each turn of a chain adds: plain turns, an assistant message its tool calls join, reasoning before
    an answer and before a call (both with passback), a turn that starts with a call joining the previous
    turn's last assistant message."""
    return [
        [_user(1), _assistant(1)],
        [_user(2), _reasoning(2), _assistant(2), _call(2)],
        [_call(3)],  # joins turn 2's assistant message
        [_output(2), _output(3), _reasoning(4), _call(4)],
        [_output(4), _assistant(5)],
        [_call(6), _output(6)],  # joins turn 5's answer
        [_user(7), _reasoning(7)],  # ends with reasoning still waiting for its message
        [_assistant(7)],
    ]


@pytest.mark.parametrize("profile_name", ["generic", "deepseek", "openai"])
def test_a_growing_chain_translates_as_a_fresh_translation_does(profile_name: ProfileName) -> None:
    profile = PROFILES[profile_name]
    memo: PrefixMemo[ChatMessages] = PrefixMemo(1 << 20)
    items: list[Item] = []
    earlier: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    for turn in _turns():
        # As along a chain: the earlier items are the same objects, the last turn's are read again (equal copies).
        items = [*items[:-1], copy.deepcopy(items[-1])] if items else []
        items += turn
        call = ModelCall("m", items, instructions="Be brief.")
        got = chat_messages(call, profile, memo)
        assert got == chat_messages(call, profile)
        earlier.append((got, copy.deepcopy(got)))
    for returned, snapshot in earlier:  # nothing handed out before was changed by a later turn
        assert returned == snapshot
    assert len(memo) == 1  # one chain, one entry, extended every turn


def test_the_memo_is_used_and_keyed_by_instructions() -> None:
    profile = PROFILES["generic"]
    memo: PrefixMemo[ChatMessages] = PrefixMemo(1 << 20)
    items = [_user(1), _assistant(1)]
    chat_messages(ModelCall("m", items, instructions="A"), profile, memo)
    hit = memo.find([*items, _user(2)])
    assert hit is not None and hit.start == 2 and hit.size == len(orjson.dumps(items))
    # Other instructions: translated afresh, the developer message says the new ones.
    got = chat_messages(ModelCall("m", [*items, _user(2)], instructions="B"), profile, memo)
    assert got[0] == {"role": profile.developer_role, "content": "B"}
    assert got == chat_messages(ModelCall("m", [*items, _user(2)], instructions="B"), profile)


def test_a_changed_or_branched_prefix_is_not_reused() -> None:
    profile = PROFILES["generic"]
    memo: PrefixMemo[ChatMessages] = PrefixMemo(1 << 20)
    items = [_user(1), _assistant(1), _user(2), _assistant(2)]
    chat_messages(ModelCall("m", items), profile, memo)
    changed = [items[0], {**_assistant(1), "content": [{"type": "output_text", "text": "other"}]}, _user(3)]
    assert memo.find(changed) is None
    assert chat_messages(ModelCall("m", changed), profile, memo)[1]["content"] == "other"
    assert memo.find(items[:2]) is None  # a branch from an earlier turn: shorter than the entry


def test_the_memo_is_bounded_and_can_be_off() -> None:
    profile = PROFILES["generic"]
    chains = [[_user(n), _assistant(n)] for n in range(10)]
    size = len(orjson.dumps(chains[0]))
    memo: PrefixMemo[ChatMessages] = PrefixMemo(3 * size)
    for items in chains:
        chat_messages(ModelCall("m", items), profile, memo)
        assert memo.bytes <= 3 * size
    assert len(memo) == 3 and memo.find(chains[-1]) is not None and memo.find(chains[0]) is None
    off: PrefixMemo[ChatMessages] = PrefixMemo(0)
    chat_messages(ModelCall("m", chains[0]), profile, off)
    assert len(off) == 0 and off.find(chains[0]) is None


def test_an_untranslatable_new_item_is_still_refused_with_its_index() -> None:
    profile = PROFILES["generic"]
    memo: PrefixMemo[ChatMessages] = PrefixMemo(1 << 20)
    items = [_user(1), _assistant(1)]
    chat_messages(ModelCall("m", items), profile, memo)
    with pytest.raises(InvalidRequest) as err:
        chat_messages(ModelCall("m", [*items, {"id": "x", "type": "mystery"}]), profile, memo)
    assert err.value.param == "input[2].type"


def test_measures_along_a_chain_equal_a_fresh_measure() -> None:
    measures = ContextMeasures(1 << 20)
    image = {"id": "msg_i", "type": "message", "role": "user",
             "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}
    by_file = {"id": "msg_f", "type": "message", "role": "user",
               "content": [{"type": "input_image", "file_id": "file_1"}]}
    items: list[Item] = []
    for turn in ([_user(1), _assistant(1)], [image], [_user(2)], [by_file], [_call(3), _output(3)], [_assistant(2)]):
        items = [*items, *turn]
        along, fresh = measures.of(items), ContextMeasures().of(items)
        assert (along.images, along.file_parts, along.kinds) == (fresh.images, fresh.file_parts, fresh.kinds)
        assert along.json_bytes >= len(orjson.dumps(items))  # an upper bound on the items' JSON
    assert measures.of(items).images == 2 and measures.of(items).file_parts
    assert measures.of(items).kinds == {"message", "function_call", "function_call_output"}


def test_the_responses_wire_input_along_a_chain_equals_a_fresh_translation() -> None:
    """The native Responses wire's memo: each item translates alone; an upstream's own reasoning item goes back
    only to the model that made it, so the memo is keyed by the upstream model too."""
    profile = NATIVE_PROFILES[("openai_responses", "openai")]
    memo: PrefixMemo[ResponsesInput] = PrefixMemo(1 << 20)
    own = {**_reasoning(1), "upstream": {"kind": "openai_responses", "model": "gpt-a",
                                         "item": {"type": "reasoning", "id": "rs_up", "encrypted_content": "x"}}}
    items: list[Item] = []
    for model, turn in (("gpt-a", [_user(1), own, _assistant(1)]), ("gpt-a", [_user(2), _call(2)]),
                        ("gpt-b", [_output(2), _assistant(3)]), ("gpt-a", [_user(4)])):
        items = [*items, *turn]
        call = ModelCall(model, items)
        assert responses_input(call, profile, memo) == responses_input(call, profile)
    assert {"type": "reasoning", "id": "rs_up", "encrypted_content": "x"} in responses_input(call, profile, memo)
    assert len(memo) == 1


def test_chains_forked_from_one_response_each_keep_their_entry() -> None:
    """Many users continuing one shared response: every chain starts with the same item objects, and each keeps
    its own entry (up to BRANCHES of them) instead of pushing the others out."""
    profile = PROFILES["generic"]
    memo: PrefixMemo[ChatMessages] = PrefixMemo(1 << 20)
    root = [_user(0), _assistant(0)]
    branches = [list(root) for _ in range(3)]
    for turn in range(1, 4):
        for n, items in enumerate(branches):
            hit = memo.find([*items, _user(turn)])
            assert (hit is not None and hit.start == len(items)) == (turn > 1)
            items += [_user(turn), _assistant(100 * n + turn)]
            call = ModelCall("m", items)
            assert chat_messages(call, profile, memo) == chat_messages(call, profile)
    assert len(memo) == 3  # one per branch: each replaced the entry it extended
    for n in range(PrefixMemo.BRANCHES + 2):  # more forks than kept: the least recently used go
        chat_messages(ModelCall("m", [*root, _user(1000 + n)]), profile, memo)
    assert len(memo) == PrefixMemo.BRANCHES
    assert memo.find([*root, _user(1000 + PrefixMemo.BRANCHES + 1)]) is not None
    assert memo.find(branches[0]) is None


@pytest.mark.parametrize("cache_key", [None, "k"])
def test_the_anthropic_wire_body_along_a_chain_equals_a_fresh_translation(cache_key: str | None) -> None:
    """The Anthropic wire's memo: blocks of one role in a row share a message (a tool call joins the answer before
    it, a tool result the user turn), thinking goes back only to its model, and the cache breakpoints Parley sets on
    the last blocks are on copies: the memo's blocks, sent again mid-conversation next turn, stay unmarked."""
    profile = NATIVE_PROFILES[("anthropic", "anthropic")]
    memo: PrefixMemo[AnthropicMessages] = PrefixMemo(1 << 20)
    thought = {**_reasoning(1), "upstream": {"kind": "anthropic", "model": "claude-a", "signature": "sig"}}
    developer = {"id": "msg_d", "type": "message", "role": "developer", "content": [
        {"type": "input_text", "text": "Use metric units."}]}
    items: list[Item] = []
    bodies = []
    for model, turn in (("claude-a", [developer, _user(1), thought, _assistant(1)]), ("claude-a", [_call(1)]),
                        ("claude-a", [_output(1), _user(2)]), ("claude-b", [_assistant(2), _user(3)]),
                        ("claude-a", [_call(4), _output(4)])):
        items = [*items, *turn]
        call = ModelCall(model, items, instructions="Be brief.", prompt_cache_key=cache_key, tools=[
            {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}])
        body = anthropic_body(call, profile, memo)
        assert body == anthropic_body(call, profile)
        bodies.append((body, copy.deepcopy(body)))
    for body, snapshot in bodies:
        assert body == snapshot
    marked = [b for m in bodies[-1][0]["messages"] for b in m["content"] if "cache_control" in b]
    assert len(marked) == (1 if cache_key else 0)  # the last block only, not every turn's last block


def test_the_gemini_wire_body_along_a_chain_equals_a_fresh_translation() -> None:
    """The Gemini wire's memo: items of one role in a row share a content (a call joins the answer before it, a
    function response the user turn), and thought signatures go back on the part of the model turn that carried
    them, attached when the turn is complete: after the memo's state was kept, so on copies. Earlier bodies never
    change, and a turn made by another model gets no signatures."""
    profile = NATIVE_PROFILES[("gemini", "gemini")]
    memo: PrefixMemo[GeminiContents] = PrefixMemo(1 << 20)

    def signed(n: int, on: str, **where: str) -> Item:
        return {**_reasoning(n), "upstream": {"kind": "gemini", "model": "gemini-a", "signature": f"sig{n}",
                                              "on": on, **where}}

    developer = {"id": "msg_d", "type": "message", "role": "developer", "content": [
        {"type": "input_text", "text": "Use metric units."}]}
    items: list[Item] = []
    bodies = []
    for model, turn in (("gemini-a", [developer, _user(1), signed(1, "text"), _assistant(1)]),
                        ("gemini-a", [signed(2, "call", call_id="call_2"), _call(2)]),
                        ("gemini-a", [_output(2), _user(3), signed(3, "own")]),
                        ("gemini-a", [_assistant(3)]),
                        ("gemini-b", [_user(4), _call(4), _output(4)]),
                        ("gemini-a", [_user(5), signed(5, "text"), _assistant(5)])):
        items = [*items, *turn]
        call = ModelCall(model, items, instructions="Be brief.", tools=[
            {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}])
        body = gemini_body(call, profile, memo)
        assert body == gemini_body(call, profile)
        bodies.append((body, copy.deepcopy(body)))
    for body, snapshot in bodies:
        assert body == snapshot
    signatures = [part.get("thoughtSignature") for content in bodies[-1][0]["contents"] for part in content["parts"]]
    assert "sig1" in signatures and "sig2" in signatures and "sig3" in signatures and "sig5" in signatures


def _image(n: int) -> Item:
    return {"id": f"msg_i{n}", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": f"look {n}"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]}


async def _no_endpoint(path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    raise AssertionError(f"a local tokenizer asked a server: {path}")


@pytest.mark.parametrize("tokenizer", ["estimate", "tiktoken:o200k_base", "tiktoken:cl100k_base"])
@pytest.mark.parametrize("profile_name", ["generic", "deepseek"])
async def test_token_counts_along_a_chain_equal_a_whole_count(tokenizer: TokenizerName,
                                                              profile_name: ProfileName) -> None:
    """The count memo (tokens.count_chat_tokens with a memo): counting only the messages after the longest prefix
    counted before gives the count of the whole body, along a chain whose translation is memoised (so its messages
    are shared), with tools, images, tool calls joining an earlier message, a changed tool list and a branch."""
    profile = PROFILES[profile_name]
    translations: PrefixMemo[ChatMessages] = PrefixMemo(1 << 20)
    counts: PrefixMemo[MessagesCount] = PrefixMemo(1 << 20)
    encodings = Encodings()
    items: list[Item] = []
    contexts: list[list[Item]] = []
    for n, turn in enumerate([[_image(0)], *_turns()]):
        items = [*items[:-1], copy.deepcopy(items[-1])] if items else []
        items += turn
        contexts.append(list(items))
        tools = [{"type": "function", "name": f"lookup{k}", "parameters": {"type": "object"}} for k in range(n % 3)]
        call = ModelCall("m", items, instructions="Be brief.", tools=tools)
        body = chat_body(call, profile, translations)
        along = await count_chat_tokens(tokenizer, body, encodings=encodings, post=_no_endpoint, memo=counts,
                                        keep=True)
        whole = await count_chat_tokens(tokenizer, chat_body(call, profile), encodings=encodings, post=_no_endpoint)
        assert along == whole and along.tokens > 0
    # The last count is remembered for all its messages (a turn whose tool call joins the previous message, a copy
    # then, counts whole and starts an entry of its own).
    hit = counts.find(body["messages"])
    assert hit is not None and hit.start == len(body["messages"])
    branch = ModelCall("m", [*contexts[3], _user(99)], instructions="Be brief.")
    along = await count_chat_tokens(tokenizer, chat_body(branch, profile, translations), encodings=encodings,
                                    post=_no_endpoint, memo=counts, keep=True)
    assert along == await count_chat_tokens(tokenizer, chat_body(branch, profile), encodings=encodings,
                                            post=_no_endpoint)


@pytest.mark.parametrize(("kind", "profile"), [("openai_responses", None), ("anthropic", "anthropic"),
                                               ("gemini", None)])
async def test_native_token_counts_along_a_chain_equal_a_whole_count(kind: str, profile: str | None) -> None:
    """A native upstream's count (over the call's Chat Completions form) with its memos equals one without."""
    cfg = ModelConfig(id="m", provider=kind, base_url="http://127.0.0.1:9/v1", upstream_model="m",  # type: ignore[arg-type]
                      **({"profile": profile} if profile else {}))
    http = Http1Pool()
    try:
        memoised = build_provider(cfg, http, policy=UpstreamPolicy(ReplyLimits(), SecretMasker(), 1 << 20))
        fresh = build_provider(cfg, http, policy=UpstreamPolicy(ReplyLimits(), SecretMasker(), 0))
        items: list[Item] = []
        for turn in _turns():
            items = [*items[:-1], copy.deepcopy(items[-1])] if items else []
            items += [item for item in turn if item["type"] != "reasoning"]  # a native wire's own reasoning only
            call = ModelCall("m", list(items), instructions="Be brief.")
            along = await memoised.count_tokens(call)
            assert along == await fresh.count_tokens(call) and along.tokens > 0
    finally:
        await http.close()
