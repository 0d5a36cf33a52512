"""Rendering prompt templates (schema/prompts.py): substitution rules and every error path."""

from __future__ import annotations

from typing import Any

import pytest

from parley.errors import InvalidRequest
from parley.schema.prompts import PromptBody, parse_variables, render, variables_echo

IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png"}
FILE = {"type": "input_file", "file_id": "file_123"}


def template(instructions: str | None = None, input_: Any = None, model: str | None = None) -> dict[str, Any]:
    return PromptBody(instructions=instructions, input=input_, model=model).template()


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "input_text", "text": t} for t in texts]}


def test_text_variables_fill_instructions_and_input_text() -> None:
    tpl = template("You help {{ customer }} with {{topic}}.", [user("About {{topic}}: {{question}}")], "m1")
    out = render(tpl, parse_variables({"customer": "Ada", "topic": "billing", "question": "why?"}))
    assert out.instructions == "You help Ada with billing."
    assert out.model == "m1"
    assert len(out.input_items) == 1
    item = out.input_items[0]
    assert item["type"] == "message" and item["role"] == "user" and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "About billing: why?"}]


def test_input_text_variable_is_text() -> None:
    out = render(template("Hi {{name}}"), parse_variables({"name": {"type": "input_text", "text": "Bob"}}))
    assert out.instructions == "Hi Bob"


def test_string_content_and_string_input_are_rendered() -> None:
    out = render(template(None, "Tell me about {{x}}"), parse_variables({"x": "owls"}))
    assert out.input_items[0]["content"] == [{"type": "input_text", "text": "Tell me about owls"}]
    messages = template(None, [{"role": "user", "content": "{{x}} please"}])
    assert render(messages, {"x": "tea"}).input_items[0]["content"][0]["text"] == "tea please"


def test_assistant_output_text_is_rendered() -> None:
    tpl = template(None, [{"role": "assistant", "content": "Hello {{name}}"}])
    part = render(tpl, {"name": "Ada"}).input_items[0]["content"][0]
    assert part["type"] == "output_text" and part["text"] == "Hello Ada"


def test_image_and_file_variables_replace_a_whole_part() -> None:
    tpl = template(None, [user("Describe:", " {{ picture }} ", "{{doc}}")])
    out = render(tpl, parse_variables({"picture": IMAGE, "doc": FILE}))
    content = out.input_items[0]["content"]
    assert content[0] == {"type": "input_text", "text": "Describe:"}
    assert content[1] == {**IMAGE, "detail": "auto"}
    assert content[2] == FILE


def test_substitution_is_one_pass() -> None:
    out = render(template("{{a}} and {{b}}"), {"a": "{{b}}", "b": "B"})
    assert out.instructions == "{{b}} and B"


def test_each_render_gets_fresh_item_ids() -> None:
    tpl = template(None, [user("hi")])
    assert render(tpl, {}).input_items[0]["id"] != render(tpl, {}).input_items[0]["id"]


def test_unused_variables_are_ignored_and_no_placeholders_is_fine() -> None:
    out = render(template("Plain."), {"extra": "x"})
    assert out.instructions == "Plain." and out.input_items == [] and out.model is None


def test_missing_variable_names_prompt_variables() -> None:
    with pytest.raises(InvalidRequest) as caught:
        render(template("{{a}} {{b}}", [user("{{c}}")]), {"b": "x"})
    assert caught.value.param == "prompt.variables"
    assert "'a'" in caught.value.message and "'c'" in caught.value.message and "'b'" not in caught.value.message


def test_image_variable_in_instructions_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        render(template("Look at {{img}}"), parse_variables({"img": IMAGE}))
    assert caught.value.param == "prompt.variables.img"


def test_file_variable_inside_mixed_text_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        render(template(None, [user("Read {{doc}} now")]), parse_variables({"doc": FILE}))
    assert caught.value.param == "prompt.variables.doc"


def test_image_variable_in_assistant_text_is_rejected() -> None:
    tpl = template(None, [{"role": "assistant", "content": "{{img}}"}])
    with pytest.raises(InvalidRequest) as caught:
        render(tpl, parse_variables({"img": IMAGE}))
    assert caught.value.param == "prompt.variables.img"


@pytest.mark.parametrize(
    "value",
    [5, None, ["a"], {"type": "input_audio"}, {"type": "input_text"}, {"type": "input_image", "detail": "huge"}],
)
def test_invalid_variable_value_names_the_variable(value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_variables({"ok": "fine", "bad": value})
    assert caught.value.param == "prompt.variables.bad"


def test_variables_echo_fills_part_defaults() -> None:
    echo = variables_echo({"s": "x", "img": IMAGE, "t": {"type": "input_text", "text": "y"}})
    assert echo == {"s": "x", "img": {**IMAGE, "detail": "auto"}, "t": {"type": "input_text", "text": "y"}}
    assert variables_echo(None) is None


def test_template_input_is_validated_at_creation() -> None:
    with pytest.raises(InvalidRequest) as caught:
        template(None, [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}])
    assert caught.value.param == "input[0].content[0].type"


def test_template_keeps_input_as_sent() -> None:
    body = template("I", [user("{{x}}")], "m")
    assert body == {"instructions": "I", "input": [user("{{x}}")], "model": "m", "metadata": None}
