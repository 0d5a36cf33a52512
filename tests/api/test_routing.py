"""Routes and retries through the API, against the fake upstream over real HTTP: a failing deployment is retried,
then the next one serves and `x-parley-deployment` names it (streamed too); a cooled-down deployment is skipped;
a 429 whose retry-after is too long is not waited for; the request's own 400 is not retried; a connection
refused, one dropped after the 200 but before any event and a read timeout fall over, a drop after the first
event does not; max_concurrent; per-minute request and token limits per deployment (a wall clock the test moves)
and an upstream 429's wait; aliases; the configuration is checked at start-up."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import ValidationError

from parley.config import EmbeddedConfig, ModelConfig, RouteConfig, Settings
from parley.providers.routing import RoutedProvider
from parley.testing.fake_anthropic import FakeAnthropic
from parley.testing.fake_gemini import FakeGemini
from parley.testing.fake_responses_upstream import FakeResponsesUpstream
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process, served


@dataclass
class Env:
    app: InProcess
    upstream: FakeUpstream

    def sent(self, upstream_model: str) -> int:
        return sum(1 for r in self.upstream.requests if r.get("model") == upstream_model)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    upstream = FakeUpstream()
    await upstream.start()
    url = upstream.base_url

    def model(model_id: str, upstream_model: str, **extra: object) -> ModelConfig:
        options = {"base_url": url, **extra}
        return ModelConfig(id=model_id, upstream_model=upstream_model, **options)  # type: ignore[arg-type]

    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"

    settings = Settings(
        data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False), access_log=True,
        models=[model("down", "error-500", retries=1), model("limited", "error-429", retries=3),
                model("refusing", "error-403"), model("picky", "error-400"), model("good", "echo", aliases=["bee"]),
                model("early", "drop-early"), model("stalled", "hang", read_timeout_s=0.3),
                model("nowhere", "echo", base_url=closed), model("dropper", "drop"),
                model("narrow", "slow", max_concurrent=1)],
        routes=[RouteConfig(id="main", deployments=["down", "good"], cooldown_s=3600),
                RouteConfig(id="rated", deployments=["limited", "good"], retry_max_wait_s=1.0, aliases=["rated-2"]),
                RouteConfig(id="keys", deployments=["refusing", "good"]),
                RouteConfig(id="strict", deployments=["picky", "good"]),
                RouteConfig(id="resilient", deployments=["nowhere", "early", "stalled", "good"], cooldown_s=3600),
                RouteConfig(id="late", deployments=["dropper", "good"]),
                RouteConfig(id="capped", deployments=["narrow", "good"])])
    async with in_process(settings) as app:
        yield Env(app, upstream)
    await upstream.stop()


async def test_a_failing_deployment_is_retried_then_the_next_serves(env: Env) -> None:
    resp = await env.app.http.post("/v1/responses", json={"model": "main", "input": "hello"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-parley-deployment"] == "good"
    assert resp.json()["model"] == "main" and resp.json()["output"][0]["content"][0]["text"] == "echo: hello"
    assert env.sent("error-500") == 2  # the first try and one retry
    # Cooled down: the next request (streamed this time) goes straight to the healthy deployment.
    async with env.app.http.stream("POST", "/v1/responses",
                                   json={"model": "main", "input": "again", "stream": True}) as streamed:
        assert streamed.status_code == 200 and streamed.headers["x-parley-deployment"] == "good"
        body = (await streamed.aread()).decode()
    assert "response.completed" in body and env.sent("error-500") == 2


async def test_the_log_says_which_deployment_served(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    resp = await env.app.http.post("/v1/responses", json={"model": "keys", "input": "hi"})
    assert resp.status_code == 200
    lines = [r for r in caplog.records if r.name == "parley.access" and r.getMessage().startswith("response")]
    assert [r.getMessage().split()[2:4] for r in lines] == [["keys", "via"]]
    assert lines[0].getMessage().split()[4] == "good" and lines[0].fields["served_by"] == "good"
    routing = [r.getMessage() for r in caplog.records if r.name == "parley.routing"]
    assert "model keys served by deployment good" in routing
    plain = await env.app.http.post("/v1/responses", json={"model": "good", "input": "hi"})
    assert plain.status_code == 200
    last = [r for r in caplog.records if r.name == "parley.access" and r.getMessage().startswith("response")][-1]
    assert " via " not in last.getMessage() and "served_by" not in last.fields


async def test_a_long_retry_after_is_not_waited_for(env: Env) -> None:
    for model in ("rated", "rated-2"):
        resp = await env.app.http.post("/v1/responses", json={"model": model, "input": "hi"})
        assert resp.status_code == 200 and resp.headers["x-parley-deployment"] == "good"
    assert env.sent("error-429") == 1  # retry-after: 7 > retry_max_wait_s; then cooled down


async def test_refused_credentials_fall_over_and_the_requests_own_errors_do_not(env: Env) -> None:
    resp = await env.app.http.post("/v1/responses", json={"model": "keys", "input": "hi"})
    assert resp.status_code == 200 and resp.headers["x-parley-deployment"] == "good"
    rejected = await env.app.http.post("/v1/responses", json={"model": "strict", "input": "hi"})
    assert rejected.status_code == 400 and "x-parley-deployment" not in rejected.headers
    assert env.sent("echo") == 1  # only the `keys` request reached the healthy deployment


async def test_refused_dropped_and_stalled_deployments_fall_over_before_the_first_event(env: Env) -> None:
    # nowhere refuses the connection, early answers 200 and drops before any chunk, stalled answers 200 and then
    # sends nothing past its read timeout: none of them had produced an event, so the next deployment serves.
    async with env.app.http.stream("POST", "/v1/responses",
                                   json={"model": "resilient", "input": "hello", "stream": True}) as streamed:
        assert streamed.status_code == 200 and streamed.headers["x-parley-deployment"] == "good"
        body = (await streamed.aread()).decode()
    assert "echo: hello" in body and "response.completed" in body and "response.failed" not in body
    assert env.sent("drop-early") == 1 and env.sent("hang") == 1
    # All three are cooled down now: the next request goes straight to good.
    resp = await env.app.http.post("/v1/responses", json={"model": "resilient", "input": "again"})
    assert resp.status_code == 200 and resp.headers["x-parley-deployment"] == "good"
    assert env.sent("drop-early") == 1 and env.sent("hang") == 1 and env.sent("echo") == 2


async def test_a_drop_after_the_first_event_is_the_responses_own_failure(env: Env) -> None:
    # dropper streams two chunks, then drops: its events already went out, so no other deployment may continue.
    async with env.app.http.stream("POST", "/v1/responses",
                                   json={"model": "late", "input": "hello there", "stream": True}) as streamed:
        assert streamed.status_code == 200 and streamed.headers["x-parley-deployment"] == "dropper"
        body = (await streamed.aread()).decode()
    assert "response.output_text.delta" in body and "response.failed" in body
    assert env.sent("echo") == 0


async def test_a_full_deployment_is_passed_over_and_a_model_with_no_room_is_a_429(env: Env) -> None:
    held = asyncio.create_task(env.app.http.post("/v1/responses", json={"model": "capped", "input": "one two"}))
    await env.upstream.arrived("slow")  # narrow's one turn is open
    other = await env.app.http.post("/v1/responses", json={"model": "capped", "input": "hi"})
    assert other.status_code == 200 and other.headers["x-parley-deployment"] == "good"
    # The limit is the deployment's, whichever public id reaches it: narrow itself has no room either.
    refused = await env.app.http.post("/v1/responses", json={"model": "narrow", "input": "hi"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "max_concurrent" in refused.json()["error"]["message"] and refused.headers["retry-after"] == "1"
    first = await held
    assert first.status_code == 200 and first.headers["x-parley-deployment"] == "narrow"
    again = await env.app.http.post("/v1/responses", json={"model": "narrow", "input": "hi"})
    assert again.status_code == 200 and env.sent("slow") == 2


async def test_unrouted_models_say_nothing_and_aliases_are_models(env: Env) -> None:
    plain = await env.app.http.post("/v1/responses", json={"model": "good", "input": "hi"})
    assert plain.status_code == 200 and "x-parley-deployment" not in plain.headers
    alias = await env.app.http.post("/v1/responses", json={"model": "bee", "input": "hi"})
    assert alias.status_code == 200 and alias.json()["model"] == "bee"
    listed = {m["id"]: m for m in (await env.app.http.get("/v1/models")).json()["data"]}
    assert {"main", "rated", "rated-2", "keys", "strict", "bee", "good"} <= set(listed)
    assert listed["main"]["capabilities"]["context_window"] == 8192


@pytest.mark.parametrize(("routes", "models", "message"), [
    ([{"id": "r", "deployments": ["nope"]}], ["a"], "deployments ['nope'] are not configured models"),
    ([{"id": "a", "deployments": ["a"]}], ["a"], "'a' is model 'a' and route 'a'"),
    ([{"id": "r", "deployments": ["a"], "aliases": ["a"]}], ["a"], "'a' is model 'a' and an alias of route 'r'"),
    ([{"id": "r", "deployments": ["a", "a"]}], ["a"], "a deployment is listed twice"),
    ([{"id": "r", "deployments": ["a"], "strategy": "weighted"}], ["a"], "needs one weight per deployment"),
    ([{"id": "r", "deployments": ["a"], "weights": [1]}], ["a"], "weights apply to strategy 'weighted' only"),
])
def test_the_configuration_is_checked_at_load(routes: list[dict[str, object]], models: list[str],
                                              message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(models=[{"id": m, "base_url": "http://127.0.0.1:1/v1"} for m in models],  # type: ignore[arg-type]
                 routes=routes, embedded={"enabled": False})  # type: ignore[arg-type]
    assert message in str(info.value)


async def test_a_route_over_three_provider_kinds_falls_over_on_their_own_errors(tmp_path: Path) -> None:
    # Anthropic's 529 overloaded_error (retry-after 7, beyond retry_max_wait_s: not waited for), then Gemini's 503
    # UNAVAILABLE, then a Responses upstream serves: each kind's error, read at its edge, moves the turn on.
    claude, gemini, responses = FakeAnthropic(), FakeGemini(), FakeResponsesUpstream()
    for server in (claude, gemini, responses):
        await server.start()
    settings = Settings(
        data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False),
        models=[ModelConfig(id="claude", provider="anthropic", profile="anthropic", base_url=claude.base_url,
                            upstream_model="error-529", retries=2),
                ModelConfig(id="gem", provider="gemini", profile="gemini", base_url=gemini.base_url,
                            upstream_model="error-503"),
                ModelConfig(id="gpt", provider="openai_responses", profile="openai", base_url=responses.base_url,
                            upstream_model="echo")],
        routes=[RouteConfig(id="any", deployments=["claude", "gem", "gpt"], retry_max_wait_s=1.0)])
    try:
        async with in_process(settings) as app:
            client = app.sdk()
            raw = await client.responses.with_raw_response.create(model="any", input="hello")
            assert raw.headers["x-parley-deployment"] == "gpt"
            assert raw.parse().output_text == "echo: hello" and raw.parse().model == "any"
    finally:
        for server in (claude, gemini, responses):
            await server.stop()
    assert len(claude.requests) == 1 and len(gemini.requests) == 1 and len(responses.requests) == 1


async def test_the_messages_door_names_the_deployment_too(env: Env) -> None:
    body = {"model": "keys", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"anthropic-version": "2023-06-01"}
    resp = await env.app.http.post("/v1/messages", json=body, headers=headers)
    assert resp.status_code == 200 and resp.headers["x-parley-deployment"] == "good", resp.text
    async with env.app.http.stream("POST", "/v1/messages", json={**body, "stream": True}, headers=headers) as s:
        assert s.status_code == 200 and s.headers["x-parley-deployment"] == "good"
        assert "message_stop" in (await s.aread()).decode()
    plain = await env.app.http.post("/v1/messages", json={**body, "model": "good"}, headers=headers)
    assert plain.status_code == 200 and "x-parley-deployment" not in plain.headers


class WallClock:
    """The wall clock routes read their per-minute windows and upstream waits from, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


MINUTE = 1_798_761_540.0  # a UTC minute's first second


@dataclass
class Limited:
    app: InProcess
    upstream: FakeUpstream
    clock: WallClock

    def sent(self, upstream_model: str) -> int:
        return sum(1 for r in self.upstream.requests if r.get("model") == upstream_model)

    def route(self, model_id: str) -> RoutedProvider:
        provider = self.app.app.state.runtime.models.get(model_id).provider
        assert isinstance(provider, RoutedProvider)
        return provider

    async def ask(self, model: str, text: str = "hi", stream: bool = False) -> httpx.Response:
        body = {"model": model, "input": text, "stream": stream}
        if not stream:
            return await self.app.http.post("/v1/responses", json=body)
        async with self.app.http.stream("POST", "/v1/responses", json=body) as streamed:
            await streamed.aread()
            return streamed


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Limited]:
    upstream = FakeUpstream()
    await upstream.start()

    def model(model_id: str, upstream_model: str, **extra: object) -> ModelConfig:
        return ModelConfig(id=model_id, upstream_model=upstream_model, base_url=upstream.base_url,
                           **extra)  # type: ignore[arg-type]

    settings = Settings(
        data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False),
        models=[model("a", "echo", requests_per_minute=2), model("b", "echo", requests_per_minute=1),
                model("t", "echo", tokens_per_minute=100), model("u", "echo"),
                model("rl", "ratelimited"), model("solo", "ratelimited", requests_per_minute=1000),
                model("endless", "retry-after-inf", requests_per_minute=1000),
                model("ages", "retry-after-1e300", requests_per_minute=1000),
                model("far", "reset-" + "9" * 400 + "s", requests_per_minute=1000)],
        routes=[RouteConfig(id="rpm", deployments=["a", "b"]), RouteConfig(id="tpm", deployments=["t", "u"]),
                RouteConfig(id="upstream", deployments=["rl", "u"], cooldown_s=3600),
                RouteConfig(id="broken", deployments=["endless", "ages", "far", "u"])])
    clock = WallClock(MINUTE + 10)
    async with in_process(settings) as app:
        for entry in app.app.state.runtime.models.all():
            if isinstance(entry.provider, RoutedProvider):
                entry.provider.wall = clock
        yield Limited(app, upstream, clock)
    await upstream.stop()


async def test_requests_per_minute_pass_a_spent_deployment_over_then_429_until_the_minute_ends(
        limited: Limited) -> None:
    served = [(await limited.ask("rpm", stream=n == 1)).headers["x-parley-deployment"] for n in range(3)]
    assert served == ["a", "a", "b"]  # a's two turns of this minute are spent: b serves the third
    limited.clock.now = MINUTE + 20.5
    for stream in (False, True):  # streamed too: the 429 comes before any event
        refused = await limited.ask("rpm", stream=stream)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "40"
        assert "x-parley-deployment" not in refused.headers
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")  # OpenAI's type for an RPM limit
    assert "a: requests_per_minute 2" in error["message"] and "b: requests_per_minute 1" in error["message"]
    # The limit is the deployment's, whichever public id reaches it: model a itself has no room this minute.
    assert (await limited.ask("a")).status_code == 429
    assert limited.sent("echo") == 3
    limited.clock.now = MINUTE + 60  # the next minute frees both, a first
    again = await limited.ask("rpm")
    assert again.status_code == 200 and again.headers["x-parley-deployment"] == "a" and limited.sent("echo") == 4


async def test_tokens_per_minute_count_the_tokens_each_answer_used(limited: Limited) -> None:
    first = await limited.ask("tpm", "hi")
    assert first.headers["x-parley-deployment"] == "t"
    used = first.json()["usage"]["total_tokens"]
    assert limited.route("tpm").deployments[0].load.tokens == used  # what the upstream reported, not an estimate
    # A long question (streamed: its usage arrives in the last chunk) still fits: t has used `used` of 100.
    long = " ".join(["word"] * 50)
    second = await limited.ask("tpm", long, stream=True)
    assert second.headers["x-parley-deployment"] == "t"
    completed = next(orjson.loads(line[6:]) for line in second.text.splitlines()
                     if line.startswith("data: ") and '"response.completed"' in line)
    usage = completed["response"]["usage"]
    assert limited.route("tpm").deployments[0].load.tokens == used + usage["total_tokens"] >= 100
    assert used + usage["input_tokens"] < 100  # the answers' output tokens count too: they filled t
    third = await limited.ask("tpm")
    assert third.status_code == 200 and third.headers["x-parley-deployment"] == "u"
    spent = await limited.ask("t")  # t's own id: no other deployment, so OpenAI's 429 for a TPM limit
    assert spent.status_code == 429 and spent.json()["error"]["type"] == "tokens"
    limited.clock.now = MINUTE + 60
    assert (await limited.ask("tpm")).headers["x-parley-deployment"] == "t"


async def test_an_upstream_429_with_openai_rate_limit_headers_passes_its_deployment_over_for_that_long(
        limited: Limited) -> None:
    # The route of one: the upstream's 429 reaches the client with the spent limit's reset as retry-after ...
    told = await limited.ask("solo")
    assert told.status_code == 429 and told.json()["error"]["code"] == "rate_limit_exceeded"
    assert (told.headers["retry-after"], told.headers["retry-after-ms"]) == ("20", "20000")
    # ... and until then Parley answers for it, without asking the upstream again.
    limited.clock.now += 19
    refused = await limited.ask("solo")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "solo: rate limited by its upstream" in refused.json()["error"]["message"]
    assert limited.sent("ratelimited") == 1
    # A route passes it over for those 20 s, not for its hour-long cool-down, then asks it again.
    limited.clock.now = MINUTE + 1
    assert (await limited.ask("upstream")).headers["x-parley-deployment"] == "u"
    limited.clock.now = MINUTE + 20
    assert (await limited.ask("upstream")).headers["x-parley-deployment"] == "u"
    assert limited.sent("ratelimited") == 2  # solo's request and the route's first
    limited.clock.now = MINUTE + 21
    assert (await limited.ask("upstream")).headers["x-parley-deployment"] == "u"
    assert limited.sent("ratelimited") == 3  # its 20 s were over: asked again (and again it said no)


async def test_an_upstream_429_with_an_absurd_wait_is_a_429_not_a_500_and_is_not_believed_for_ever(
        limited: Limited) -> None:
    # A broken upstream: `retry-after: inf`, a wait of 1e300 s, and an x-ratelimit-reset of 400 nines.
    for model in ("endless", "far", "ages"):
        for _ in range(2):  # the second request reads what the first left on the deployment
            told = await limited.ask(model)
            assert told.status_code == 429, (model, told.text)
            assert told.json()["error"]["code"] == "rate_limit_exceeded"
            wait = told.headers.get("retry-after")
            assert wait is None or 0 <= int(wait) <= 86400, (model, wait)
    assert limited.sent("retry-after-inf") == 2  # an unreadable wait is no wait: asked again
    # A route passes the three over (they are rate limited) and u serves.
    limited.clock.now = MINUTE + 30
    served = await limited.ask("broken")
    assert served.status_code == 200 and served.headers["x-parley-deployment"] == "u"
    # The longest an upstream can park a deployment is a day: after it, the 1e300 one is asked again.
    sent = limited.sent("retry-after-1e300")
    limited.clock.now += 86400 + 1
    assert (await limited.ask("ages")).status_code == 429 and limited.sent("retry-after-1e300") == sent + 1


async def test_a_turn_cut_before_its_usage_still_counts_against_tokens_per_minute(tmp_path: Path) -> None:
    # A hostile client streams and leaves after the first delta: the upstream read the whole input (and wrote some
    # output), but no usage ever arrives. Counted at nothing, such turns spent the upstream's tokens past the
    # deployment's tokens_per_minute for ever; they are now counted by the providers' own estimate (~4
    # characters a token of input, a token per delta seen).
    upstream = FakeUpstream()
    await upstream.start()
    settings = Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="t", base_url=upstream.base_url, upstream_model="slow",
                                            tokens_per_minute=100),
                                ModelConfig(id="u", base_url=upstream.base_url, upstream_model="echo")],
                        routes=[RouteConfig(id="tpm", deployments=["t", "u"])])
    long = " ".join(["word"] * 200)  # ~1,000 characters: ~250 tokens by the estimate, past t's 100
    try:
        async with served(settings) as app, httpx.AsyncClient(base_url=app.base_url, timeout=60) as client:
            route = app.app.state.runtime.models.get("tpm").provider
            assert isinstance(route, RoutedProvider)
            load = route.deployments[0].load
            async with client.stream("POST", "/responses", json={"model": "tpm", "input": long,
                                                                   "stream": True}) as cut:
                assert cut.headers["x-parley-deployment"] == "t"
                async for line in cut.aiter_lines():
                    if "response.output_text.delta" in line:
                        break  # the client leaves before the usage chunk
            for _ in range(2400):  # until the server has seen the disconnect and closed the turn (bounded)
                if load.open_turns == 0:
                    break
                await asyncio.sleep(0.025)
            assert load.open_turns == 0 and load.tokens >= 100, load.tokens
            after = await client.post("/responses", json={"model": "tpm", "input": "hi"})
            assert after.status_code == 200 and after.headers["x-parley-deployment"] == "u"
    finally:
        await upstream.stop()


@pytest.mark.parametrize(("extra", "message"), [
    ({"requests_per_minute": 0}, "greater than or equal to 1"),
    ({"tokens_per_minute": -5}, "greater than or equal to 1"),
    ({"requests_per_minute": "60"}, "Input should be a valid integer"),
    ({"tokens_per_minute": 1.5}, "Input should be a valid integer"),
    ({"tokens_per_minute": True}, "Input should be a valid integer"),
])
def test_per_minute_limits_are_checked_at_load(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(models=[{"id": "m", "base_url": "http://127.0.0.1:1/v1", **extra}],  # type: ignore[list-item]
                 embedded={"enabled": False})  # type: ignore[arg-type]
    assert message in str(info.value) and f"models.0.{next(iter(extra))}" in str(info.value)
