"""POST /v1/responses/input_tokens against a real `parley serve` process, through the official SDK."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI


def test_input_tokens_count(client: OpenAI) -> None:
    short = client.responses.input_tokens.count(model="echo", input="hello world")
    assert short.object == "response.input_tokens"
    # The generic profile estimates: "user" (1) + "hello world" (3) + 3 per message + 3 priming the reply.
    assert short.input_tokens == 10
    longer = client.responses.input_tokens.count(model="echo", input="hello world", instructions="Be terse.")
    assert longer.input_tokens == 10 + 3 + 2 + 3  # "system" (2 by the estimate) + "Be terse." (3) + 3


def test_input_tokens_errors(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.input_tokens.count(model="no-such-model", input="hi")
    assert info.value.code == "model_not_found"
