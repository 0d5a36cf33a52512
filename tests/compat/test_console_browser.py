"""The web console in a real headless browser: Debian's Chromium driven by Playwright against a real
`parley serve` (and the fake upstream over HTTP). The pages load under their content-security policy without a
script error, a streamed playground answer appears and continues its chain, a function call is answered with its
output from the playground and the chain goes on with it, the explorer lists responses and shows a response's tool
items, its cost and its server-side timeline (foreground and background), the usage page draws its charts from the
usage and costs APIs, and an admin key creates a key. Screenshots go to test-artifacts/console/
(PARLEY_TEST_ARTIFACTS overrides the root).

Chromium and the `playwright` package are installed by `make test`; without them this test fails (naming what is
missing, or at import): it never skips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from compat_support import ParleyServer, model_toml
from playwright.async_api import Page, async_playwright, expect

from parley.testing.fake_upstream import FakeUpstream

ARTIFACTS = Path(os.environ.get("PARLEY_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "console"
PRICE = "price = { input = 2.0, output = 8.0 }\n"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed: `make test` installs Debian's `chromium` package (apt-get, as root).")


def _key(server: ParleyServer, *args: str) -> str:
    out = subprocess.run([str(Path(sys.executable).parent / "parley"), "keys", "create", "--data-dir",
                          str(server.data_dir), *args], capture_output=True, text=True, timeout=60, check=True)
    return str(json.loads(out.stdout.strip().splitlines()[-1])["key"])


@pytest.fixture(scope="module")
def console_server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ParleyServer,
                                                                                                  str, str]]:
    config = model_toml("echo", fake.base_url, "slow") + PRICE + model_toml("tools", fake.base_url, "tools") + PRICE
    server = ParleyServer(tmp_path_factory.mktemp("parley-console"), config + "[embedded]\nenabled = false\n")
    project_key = _key(server, "--project", "console", "--name", "browser")
    admin_key = _key(server, "--role", "admin")
    server.start()
    try:
        yield server, project_key, admin_key
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def browser_page(console_server: tuple[ParleyServer, str, str]) -> AsyncIterator[tuple[Page, list[str]]]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=_chromium(), headless=True,
                                           args=["--no-sandbox", "--disable-gpu"])
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" else None)
        yield page, problems
        await browser.close()


def _server_clock(unix_ms: int) -> str:
    """A time as the console shows a server timestamp (UTC, to the millisecond)."""
    return datetime.fromtimestamp(unix_ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:12] + " UTC"


async def _use_key(page: Page, key: str) -> None:
    await page.fill("#key", key)
    await page.click("#key-form button[type=submit]")


async def test_console_pages_in_chromium(browser_page: tuple[Page, list[str]],
                                         console_server: tuple[ParleyServer, str, str], fake: FakeUpstream) -> None:
    page, problems = browser_page
    server, project_key, admin_key = console_server
    http = httpx.AsyncClient(timeout=10)
    # The pages hold no secret and load without a key; their policy forbids inline script.
    raw = await http.get(server.root + "/console")
    assert raw.status_code == 200 and "text/html" in raw.headers["content-type"]
    csp = raw.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in raw.text and project_key not in raw.text
    assert (await http.get(server.root + "/console/nope.js")).status_code == 404

    await page.goto(server.root + "/console#playground")
    await expect(page.locator("#key-state")).to_have_text("no key")
    await _use_key(page, project_key)
    await expect(page.locator("#key-state")).to_have_text(f"using …{project_key[-4:]}")
    assert await page.evaluate("sessionStorage.getItem('parley.key')") == project_key
    await expect(page.locator("#models option[value=tools]")).to_have_count(1)

    # A streamed answer: the slow fake model sends a word every 0.2 s, shown as it comes.
    await page.fill("#model", "echo")
    await page.fill("#input", "hello from the browser")
    await page.click("#send")
    answer = page.locator("#transcript .answer").last
    await expect(answer.locator(".live")).to_contain_text("echo:")  # the first deltas, before the end
    await expect(answer).to_have_class("turn answer done", timeout=30_000)
    await expect(answer.locator(".live")).to_have_text("echo: hello from the browser")
    await expect(answer.locator(".usage-line")).to_contain_text("completed · tokens:")
    first_id = await page.locator("#previous").text_content()
    assert first_id and first_id.startswith("resp_")
    await page.screenshot(path=str(ARTIFACTS / "playground-streamed.png"), full_page=True)

    # The next turn continues the chain: the upstream sees the first exchange.
    await page.fill("#input", "second turn")
    await page.click("#send")
    await expect(page.locator("#transcript .answer.done")).to_have_count(2, timeout=30_000)
    chained = next(r for r in reversed(fake.requests) if "second turn" in json.dumps(r))
    assert "hello from the browser" in json.dumps(chained["messages"])

    # A function tool: the model calls it and the call shows as an item.
    await page.click("#new-chat")
    await page.fill("#model", "tools")
    await page.fill("#t-functions", json.dumps([{"type": "function", "name": "lookup", "parameters": {
        "type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}}]))
    await page.fill("#input", "find the console")
    await page.click("#send")
    call = page.locator("#transcript [data-item=function_call]")
    await expect(call).to_contain_text("lookup", timeout=30_000)
    await expect(page.locator("#transcript .answer.done")).to_have_count(1, timeout=30_000)
    call_id = await page.locator("#previous").text_content()
    await page.screenshot(path=str(ARTIFACTS / "playground-tool-call.png"), full_page=True)

    # The call answered from the playground: its function_call_output continues the chain from the call's
    # response, the model sees it (as the tool's result) and answers from it; both show in the transcript.
    outputs = page.locator("#transcript .call-outputs")
    await expect(outputs.locator("textarea")).to_have_count(1)
    await expect(outputs).to_contain_text("Output of lookup (call_fake0)")
    await outputs.locator("textarea").fill("the console lives at /console")
    await outputs.locator("button[type=submit]").click()
    await expect(page.locator("#transcript .answer.done")).to_have_count(2, timeout=30_000)
    await expect(page.locator("#transcript [data-item=function_call_output]")).to_contain_text(
        "the console lives at /console")
    answer = page.locator("#transcript .answer").last
    await expect(answer.locator(".live")).to_have_text("done: the console lives at /console")
    answered_id = await page.locator("#previous").text_content()
    assert answered_id and answered_id != call_id
    answered = fake.requests[-1]
    assert answered["messages"][-1] == {"role": "tool", "tool_call_id": "call_fake0",
                                        "content": "the console lives at /console"}
    assert "find the console" in json.dumps(answered["messages"])  # the chain, from previous_response_id
    await page.screenshot(path=str(ARTIFACTS / "playground-function-output.png"), full_page=True)

    # Invalid JSON in a field is caught before any request, naming the field.
    await page.fill("#schema", "{not json")
    await page.click("#send")
    await expect(page.locator("#play-error")).to_contain_text("The JSON schema is not valid JSON")
    await page.fill("#schema", "")

    # The explorer: the four stored responses, filtered by model; the answered call's response shows its input
    # (the function_call_output), its chain, its cost and its server-side timeline.
    await page.goto(server.root + "/console#responses")
    await expect(page.locator("#response-list tbody tr")).to_have_count(4)
    await page.fill("#f-model", "tools")
    await page.click("#filter-form button[type=submit]")
    await expect(page.locator("#response-list tbody tr")).to_have_count(2)
    await page.locator(f"#response-list tbody tr[data-id={answered_id}]").click()
    detail = page.locator("#detail")
    await expect(detail.locator(".inputs [data-item=function_call_output]")).to_contain_text("call_fake0")
    await expect(detail.locator(".chain li")).to_have_count(2)
    usage = (await http.get(f"{server.base_url}/responses/{answered_id}/usage",
                            headers={"Authorization": f"Bearer {project_key}"})).json()
    assert usage["cost"]["value"] == pytest.approx((usage["input_tokens"] * 2.0 + usage["output_tokens"] * 8.0) / 1e6)
    assert usage["cost"]["value"] > 0
    await expect(detail.locator(".cost-line")).to_contain_text(f"cost: ${usage['cost']['value']:.6f}")
    await expect(detail.locator(".cost-line")).to_contain_text(f"{usage['total_tokens']} tokens")
    marks = detail.locator(".runs .marks tbody tr")
    await expect(marks).to_have_count(5)  # started, upstream_opened, first_output, turn_done, finished
    for event in ("started", "upstream_opened", "first_output", "turn_done"):
        await expect(detail.locator(f".runs tr[data-event={event}]")).to_have_count(1)
    await expect(detail.locator(".runs tr[data-event=finished]")).to_contain_text("status: completed")
    await expect(detail.locator(".runs tr[data-event=started]")).to_contain_text(
        _server_clock(usage["runs"][0]["timeline"]["started_at"]))  # the server's clock, not the browser's
    await expect(detail.locator(".runs .waterfall rect")).to_have_count(1)  # one model turn
    await expect(detail.locator("h3", has_text="Events")).to_have_count(0)  # browser-timed events: background only
    await page.screenshot(path=str(ARTIFACTS / "explorer-cost-timeline.png"), full_page=True)
    # Its chain leads to the call's response, with the function_call item.
    await detail.locator(f".chain a:text('{call_id}')").click()
    await expect(detail.locator(".outputs [data-item=function_call]")).to_contain_text("lookup")
    await expect(detail.locator(".inputs")).to_contain_text("find the console")
    await expect(detail.locator(".usage-line")).to_contain_text("tokens:")
    await expect(detail.locator(".runs tr[data-event=turn_done]")).to_contain_text("finish_reason: tool_calls")
    await page.fill("#f-model", "")
    await page.select_option("#f-status", "completed")
    await page.click("#filter-form button[type=submit]")
    await expect(page.locator("#response-list tbody tr")).to_have_count(4)
    await page.select_option("#f-status", "failed")
    await page.click("#filter-form button[type=submit]")
    await expect(page.locator("#response-list tbody tr")).to_have_count(0)
    await page.select_option("#f-status", "")
    await page.click("#filter-form button[type=submit]")
    await expect(page.locator("#response-list tbody tr")).to_have_count(4)
    await page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)

    # A background run: its events replayed and followed in the explorer's timeline until it ends.
    queued = await http.post(server.base_url + "/responses", headers={"Authorization": f"Bearer {project_key}"},
                             json={"model": "echo", "input": "one two three four", "background": True})
    assert queued.status_code == 200, queued.text
    await page.click("#filter-form button[type=submit]")
    await page.locator(f"#response-list tbody tr[data-id={queued.json()['id']}]").click()
    timeline = page.locator("#detail .timeline")
    await expect(timeline).to_contain_text("response.completed", timeout=30_000)
    await expect(timeline).to_contain_text("response.output_text.delta")
    await expect(timeline).to_contain_text("response.created")
    await expect(page.locator("#detail .status")).to_contain_text("completed")  # the live run's end, shown
    await expect(page.locator("#detail .chain li").last).to_contain_text("completed")
    await expect(page.locator("#detail .outputs")).to_contain_text("echo: one two three four")
    # Once it ended, its server-side timeline and cost (from the record written with its last events).
    await expect(page.locator("#detail .runs")).to_contain_text("background run · completed")
    await expect(page.locator("#detail .runs tr[data-event=finished]")).to_contain_text("status: completed")
    await expect(page.locator("#detail .cost-line")).to_contain_text("cost: $")
    await page.screenshot(path=str(ARTIFACTS / "explorer-background.png"), full_page=True)

    # A project key cannot read usage: the page says so in the API's words.
    await page.goto(server.root + "/console#usage")
    await expect(page.locator("#usage-error")).to_contain_text("40")

    # Usage and keys with an admin key.
    await _use_key(page, admin_key)
    await page.click("#usage-form button[type=submit]")
    charts = page.locator("#usage-charts .chart")
    await expect(charts).to_have_count(6)
    await expect(charts.nth(1)).to_contain_text("echo")  # tokens by model
    await expect(charts.nth(1).locator("rect")).to_have_count(2)
    await expect(charts.nth(4)).to_contain_text("$")  # cost by model, from the configured prices
    await page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)

    await page.goto(server.root + "/console#keys")
    await expect(page.locator("#key-list tbody tr")).to_have_count(2)
    await page.fill("#k-name", "made-in-browser")
    await page.fill("#k-project", "console")
    await page.click("#key-create button[type=submit]")
    await expect(page.locator("#key-secret")).to_contain_text("copy it now")
    await expect(page.locator("#key-list tbody tr")).to_have_count(3)
    await expect(page.locator("#key-list")).to_contain_text("made-in-browser")
    secret = (await page.locator("#key-secret").text_content() or "").split(": ", 1)[1].split(" (", 1)[0]
    ok = await http.get(server.base_url + "/models", headers={"Authorization": f"Bearer {secret}"})
    await http.aclose()
    assert ok.status_code == 200  # the key the console made works
    await page.screenshot(path=str(ARTIFACTS / "keys.png"), full_page=True)
    # No script error and no policy violation; the only console errors are the refused usage calls above.
    assert not [p for p in problems if "page error" in p or "Content Security Policy" in p], problems
    assert all("403" in p or "401" in p for p in problems), problems
