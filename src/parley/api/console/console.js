// Parley's web console: one page, four views (playground, responses, usage, keys), plain DOM, no framework.
// The API key lives in sessionStorage and goes out only as an Authorization header on same-origin fetches:
// the pages themselves hold no secret, and without ambient credentials (no cookies) there is nothing to forge.
"use strict";

const KEY_SLOT = "parley.key";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

const pretty = (value) => JSON.stringify(value, null, 2);
const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "never");
const toSeconds = (local) => (local ? Math.floor(new Date(local).getTime() / 1000) : null);

// -- the key and API calls ------------------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_SLOT) || "";
}

function showKeyState() {
  const key = apiKey();
  $("key-state").textContent = key ? `using …${key.slice(-4)}` : "no key";
}

class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error ? body.error : { message: `HTTP ${status}` };
    super(`${status}: ${err.message}${err.param ? ` (param: ${err.param})` : ""}`);
    this.status = status;
  }
}

function headers(json) {
  const h = { Authorization: `Bearer ${apiKey()}` };
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(method, path, body) {
  const resp = await fetch(path, { method, headers: headers(body !== undefined),
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// Server-Sent Events from a fetch body: calls onEvent(event) per `data:` frame until the stream ends.
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data && data !== "[DONE]") onEvent(JSON.parse(data));
    }
  }
}

// -- items, shown the same way in the playground and the explorer ----------------------------------------

function itemView(item) {
  if (item.type === "message") {
    const parts = (item.content || []).map((part) => part.text ?? part.refusal ?? pretty(part));
    return el("div", { class: "text", "data-item": "message" }, parts.join("\n"));
  }
  const detail = {};
  for (const [name, value] of Object.entries(item)) {
    if (!["id", "type", "status"].includes(name)) detail[name] = value;
  }
  return el("div", { class: "item", "data-item": item.type },
    el("strong", {}, item.type), item.status ? ` (${item.status})` : "", item.name ? ` ${item.name}` : "",
    el("pre", {}, pretty(detail)));
}

function usageLine(usage) {
  if (!usage) return "";
  const cached = usage.input_tokens_details ? usage.input_tokens_details.cached_tokens : 0;
  const reasoning = usage.output_tokens_details ? usage.output_tokens_details.reasoning_tokens : 0;
  return `tokens: ${usage.input_tokens} in (${cached} cached), ${usage.output_tokens} out ` +
         `(${reasoning} reasoning), ${usage.total_tokens} total`;
}

// -- playground ---------------------------------------------------------------------------------------

let previousId = null;
let running = null;  // the AbortController of the streaming request

function setPrevious(id) {
  previousId = id;
  $("previous").textContent = id || "none";
}

function jsonField(id, what) {
  const raw = $(id).value.trim();
  if (!raw) return null;
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new Error(`${what} is not valid JSON: ${err.message}`);
  }
}

// The body of a playground request: the form's settings, with `input` (the form's text, or the outputs of the
// function calls being answered) and the response it continues (`previous`: forced when answering calls).
function playRequest(input, previous) {
  const body = { model: $("model").value.trim(), input, stream: true, store: true };
  const instructions = $("instructions").value.trim();
  if (instructions) body.instructions = instructions;
  if ($("effort").value) body.reasoning = { effort: $("effort").value };
  const continues = previous || ($("continue").checked ? previousId : null);
  if (continues) body.previous_response_id = continues;
  const tools = [];
  if ($("t-web").checked) tools.push({ type: "web_search" });
  if ($("t-code").checked) tools.push({ type: "code_interpreter", container: { type: "auto" } });
  if ($("t-files").checked) tools.push({ type: "file_search", vector_store_ids: [$("t-vs").value.trim()] });
  if ($("t-mcp").checked) {
    tools.push({ type: "mcp", server_label: $("t-mcp-label").value.trim(), server_url: $("t-mcp-url").value.trim(),
                 require_approval: "never" });
  }
  const functions = jsonField("t-functions", "Functions");
  if (functions !== null) {
    if (!Array.isArray(functions)) throw new Error("Functions must be a JSON array of function tools.");
    tools.push(...functions);
  }
  if (tools.length) body.tools = tools;
  const schema = jsonField("schema", "The JSON schema");
  if (schema !== null) body.text = { format: { type: "json_schema", name: "output", schema, strict: true } };
  return body;
}

// Calls the client answers, and the item type of each answer.
const CALL_OUTPUTS = { function_call: "function_call_output", custom_tool_call: "custom_tool_call_output" };

async function play(event) {
  event.preventDefault();
  $("play-error").textContent = "";
  let body;
  try {
    body = playRequest($("input").value, null);
  } catch (err) {
    $("play-error").textContent = err.message;
    return;
  }
  await send(body, el("div", { class: "text" }, body.input));
}

// A response that ended with function (or custom tool) calls: a form to answer each with its output; sending
// it continues the chain from that response with the outputs as input.
function callOutputsForm(response, calls) {
  const fields = calls.map((call) => el("label", {},
    `Output of ${call.name} (${call.call_id})`,
    el("textarea", { rows: "2", "data-call-id": call.call_id, "data-type": CALL_OUTPUTS[call.type] })));
  const form = el("form", { class: "call-outputs" }, el("h4", {}, "Answer the calls"), fields,
    el("button", { type: "submit" }, calls.length > 1 ? "Send outputs" : "Send output"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("play-error").textContent = "";
    const input = [...form.querySelectorAll("textarea")].map((area) => ({
      type: area.dataset.type, call_id: area.dataset.callId, output: area.value }));
    let body;
    try {
      body = playRequest(input, response.id);
    } catch (err) {
      $("play-error").textContent = err.message;
      return;
    }
    form.querySelector("button").disabled = true;
    await send(body, el("div", { class: "items" }, input.map(itemView)));
  });
  return form;
}

// Stream one request into the transcript: the user's turn (`asked`), then the answer as it comes.
async function send(body, asked) {
  const turn = el("div", { class: "turn" }, el("h3", {}, "You"), asked);
  const answer = el("div", { class: "turn answer" }, el("h3", {}, `${body.model}`));
  const items = el("div", { class: "items" });
  const live = el("div", { class: "text live" });
  const footer = el("div", { class: "usage-line" });
  answer.append(items, live, footer);
  $("transcript").append(turn, answer);
  running = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const shown = new Map();  // output_index -> element
  let final = null;
  try {
    const resp = await fetch("/v1/responses", { method: "POST", headers: headers(true), body: JSON.stringify(body),
                                                signal: running.signal });
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
    await readEvents(resp, (ev) => {
      if (ev.type === "response.created") answer.querySelector("h3").textContent = `${body.model} · ${ev.response.id}`;
      else if (ev.type === "response.output_text.delta") live.textContent += ev.delta;
      else if (ev.type === "response.output_item.added" && ev.item.type !== "message") {
        const view = itemView(ev.item);
        shown.set(ev.output_index, view);
        items.append(view);
      } else if (ev.type === "response.output_item.done" && ev.item.type !== "message") {
        const view = itemView(ev.item);
        const old = shown.get(ev.output_index);
        if (old) old.replaceWith(view); else items.append(view);
        shown.set(ev.output_index, view);
      } else if (["response.completed", "response.incomplete", "response.failed"].includes(ev.type)) {
        final = ev.response;
        setPrevious(ev.response.id);
        footer.textContent = `${ev.response.status} · ${usageLine(ev.response.usage)}`;
        if (ev.response.error) $("play-error").textContent = ev.response.error.message;
      } else if (ev.type === "error") {
        $("play-error").textContent = `${ev.code || "error"}: ${ev.message}`;
      }
    });
    const calls = final && final.status === "completed"
      ? (final.output || []).filter((item) => item.type in CALL_OUTPUTS) : [];
    if (calls.length) answer.append(callOutputsForm(final, calls));
    answer.classList.add("done");
  } catch (err) {
    if (err.name !== "AbortError") $("play-error").textContent = err.message;
  } finally {
    running = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

async function loadModels() {
  try {
    const models = await api("GET", "/v1/models");
    $("models").replaceChildren(...models.data.map((m) => el("option", { value: m.id })));
    if (!$("model").value && models.data.length) $("model").value = models.data[0].id;
  } catch (err) {
    $("play-error").textContent = err.message;
  }
}

// -- response explorer ----------------------------------------------------------------------------------

let listCursor = null;

function listQuery() {
  const q = new URLSearchParams({ limit: "20" });
  if ($("f-model").value.trim()) q.set("model", $("f-model").value.trim());
  if ($("f-status").value) q.set("status", $("f-status").value);
  const meta = $("f-metadata").value.trim();
  if (meta) {
    const cut = meta.indexOf("=");
    if (cut < 1) throw new Error("Metadata filter: write key=value.");
    q.set(`metadata[${meta.slice(0, cut)}]`, meta.slice(cut + 1));
  }
  const from = toSeconds($("f-from").value);
  const to = toSeconds($("f-to").value);
  if (from !== null) q.set("created_after", String(from));
  if (to !== null) q.set("created_before", String(to));
  return q;
}

async function loadResponses(more) {
  $("list-error").textContent = "";
  const body = $("response-list").querySelector("tbody");
  try {
    const q = listQuery();
    if (more && listCursor) q.set("after", listCursor);
    const page = await api("GET", `/v1/responses/list?${q}`);
    if (!more) body.replaceChildren();
    for (const r of page.data) {
      body.append(el("tr", { class: "row", "data-id": r.id, onclick: () => openResponse(r.id) },
        el("td", {}, when(r.created_at)), el("td", {}, el("code", {}, r.id)), el("td", {}, r.model),
        el("td", {}, r.status), el("td", {}, r.usage ? String(r.usage.total_tokens) : ""),
        el("td", {}, r.metadata && Object.keys(r.metadata).length ? JSON.stringify(r.metadata) : "")));
    }
    listCursor = page.last_id;
    $("more").hidden = !page.has_more;
  } catch (err) {
    $("list-error").textContent = err.message;
  }
}

async function chainOf(response) {
  const chain = [];
  let id = response.previous_response_id;
  while (id && chain.length < 50) {
    try {
      const prev = await api("GET", `/v1/responses/${encodeURIComponent(id)}`);
      chain.unshift(prev);
      id = prev.previous_response_id;
    } catch (err) {
      chain.unshift({ id, status: `unavailable (${err.message})` });
      break;
    }
  }
  return chain;
}

let following = null;

const usd = (value) => `$${value.toFixed(6)}`;
const clock = (unixMs) => `${new Date(unixMs).toISOString().slice(11, 23)} UTC`;

// A response's cost and tokens from its usage records (GET /v1/responses/{id}/usage).
function costLine(usage) {
  const c = usage.cost;
  const calls = Object.entries(usage.tool_calls).map(([kind, n]) => `${kind} × ${n}`).join(", ");
  return `cost: ${usd(c.value)} (input ${usd(c.input)}, cached input ${usd(c.cached_input)}, ` +
         `output ${usd(c.output)}, tool calls ${usd(c.tool_calls)}) · ${usage.total_tokens} tokens ` +
         `(${usage.input_tokens} in, ${usage.output_tokens} out)${calls ? ` · built-in calls: ${calls}` : ""}`;
}

function markDetail(mark) {
  return Object.entries(mark).filter(([name]) => name !== "event" && name !== "ms")
    .map(([name, value]) => `${name}: ${value}`).join(", ");
}

// Model turns and built-in calls as bars on the run's time axis (from its marks).
function waterfall(marks) {
  const spans = [];
  const started = new Map();
  let boundary = 0;  // when the next model turn was asked for: the start, then the end of the last tool call
  for (const mark of marks) {
    if (mark.event === "turn_done") {
      spans.push({ label: `model turn ${mark.turn}`, from: boundary, to: mark.ms, kind: "turn" });
      boundary = mark.ms;
    } else if (mark.event === "tool_call_started") {
      started.set(mark.call_id, mark.ms);
    } else if (mark.event === "tool_call_done") {
      spans.push({ label: mark.name, from: started.get(mark.call_id) ?? boundary, to: mark.ms, kind: "tool" });
      boundary = Math.max(boundary, mark.ms);
    }
  }
  const total = Math.max(1, ...marks.map((m) => m.ms));
  const width = 640, barH = 14, gap = 4, labelW = 140, plot = width - labelW - 80;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${Math.max(1, spans.length) * (barH + gap)}`, role: "img",
                             "aria-label": "model turns and tool calls over time", class: "waterfall" });
  spans.forEach((span, i) => {
    const y = i * (barH + gap);
    const x = labelW + (plot * span.from) / total;
    const w = Math.max(1, (plot * (span.to - span.from)) / total);
    svg.append(svgEl("text", { x: 0, y: y + 11 }, document.createTextNode(span.label)),
      svgEl("rect", { x, y, width: w, height: barH, class: span.kind }),
      svgEl("text", { x: x + w + 4, y: y + 11 }, document.createTextNode(`${(span.to - span.from).toFixed(1)} ms`)));
  });
  return spans.length ? svg : null;
}

// One run's server-side timeline: a waterfall and every mark with its server time.
function runView(run) {
  const head = el("p", { class: "run-line" }, `${run.background ? "background run" : "run"} · ${run.status} · ` +
    `latency ${run.latency_ms} ms · time to first token ${run.ttft_ms ?? "–"} ms · ${usd(run.cost.value)}`);
  const t = run.timeline;
  if (!t) return el("div", { class: "run" }, head, el("p", { class: "hint" }, "No timing marks were kept for this run."));
  const rows = t.marks.map((mark) => el("tr", { "data-event": mark.event },
    el("td", {}, clock(t.started_at + mark.ms)), el("td", {}, `+${mark.ms.toFixed(1)} ms`), el("td", {}, mark.event),
    el("td", {}, markDetail(mark))));
  return el("div", { class: "run" }, head, waterfall(t.marks),
    el("table", { class: "marks" }, el("thead", {}, el("tr", {}, el("th", {}, "Server time"), el("th", {}, "Offset"),
      el("th", {}, "Mark"), el("th", {}, "Detail"))), el("tbody", {}, rows)));
}

// Fill the cost line and the server timeline of a response from its usage records.
async function showUsage(id, costView, runsView) {
  try {
    const usage = await api("GET", `/v1/responses/${encodeURIComponent(id)}/usage`);
    costView.textContent = costLine(usage);
    runsView.replaceChildren(...(usage.runs.length ? usage.runs.map(runView)
      : [el("p", { class: "hint" }, "Nothing recorded yet: the response has not finished running, or never reached a model.")]));
  } catch (err) {
    costView.textContent = `cost: unavailable (${err.message})`;
  }
}

async function openResponse(id) {
  if (following) following.abort();
  const detail = $("detail");
  detail.hidden = false;
  detail.replaceChildren(el("p", {}, `Loading ${id}…`));
  try {
    const response = await api("GET", `/v1/responses/${encodeURIComponent(id)}`);
    const inputs = await api("GET", `/v1/responses/${encodeURIComponent(id)}/input_items?order=asc&limit=100`);
    const chain = await chainOf(response);
    const events = el("table", { class: "timeline" }, el("tbody"));
    const summary = (r) => `${r.model} · ${r.status} · created ${when(r.created_at)}${r.background ? " · background" : ""}`;
    const status = el("p", { class: "status" }, summary(response));
    const usage = el("p", { class: "usage-line" }, usageLine(response.usage));
    const cost = el("p", { class: "cost-line" }, "cost: …");
    const runs = el("div", { class: "runs" });
    const ownStatus = document.createTextNode(` ${response.status}`);  // its entry in the chain
    const outputs = el("div", { class: "outputs" }, (response.output || []).map(itemView));
    detail.replaceChildren(
      el("h2", {}, response.id), status, usage, cost,
      el("h3", {}, "Chain"),
      el("ol", { class: "chain" }, [...chain, response].map((r) => el("li", {},
        el("a", { href: "#responses", onclick: (e) => { e.preventDefault(); openResponse(r.id); } }, r.id),
        r === response ? ownStatus : ` ${r.status}`))),
      el("h3", {}, "Input items"),
      el("div", { class: "inputs" }, inputs.data.map(itemView)),
      el("h3", {}, "Output items"),
      outputs,
      el("h3", {}, "Timeline (server clock)"),
      runs,
      ...(response.background ? [el("h3", {}, "Events (as this browser received them)"), events] : []),
      el("details", {}, el("summary", {}, "Raw response"), el("pre", {}, pretty(response))));
    await showUsage(response.id, cost, runs);
    if (response.background) {
      followEvents(response.id, events.querySelector("tbody"), (final) => {  // a live run ended: show its end
        status.textContent = summary(final);
        ownStatus.textContent = ` ${final.status}`;
        usage.textContent = usageLine(final.usage);
        outputs.replaceChildren(...(final.output || []).map(itemView));
        showUsage(final.id, cost, runs);  // its usage record came with its last events
      });
    }
  } catch (err) {
    detail.replaceChildren(el("p", { class: "error" }, err.message));
  }
}

// A background run's events, replayed from the start and then followed live until its terminal event.
const TERMINAL = ["response.completed", "response.failed", "response.incomplete", "response.cancelled"];

async function followEvents(id, tbody, onEnd) {
  following = new AbortController();
  const started = performance.now();
  try {
    const resp = await fetch(`/v1/responses/${encodeURIComponent(id)}?stream=true`,
                             { headers: headers(false), signal: following.signal });
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
    await readEvents(resp, (ev) => {
      const at = `+${((performance.now() - started) / 1000).toFixed(3)} s`;
      const what = ev.delta !== undefined ? JSON.stringify(ev.delta) : ev.item ? ev.item.type : "";
      tbody.append(el("tr", {}, el("td", {}, at), el("td", {}, String(ev.sequence_number)), el("td", {}, ev.type),
        el("td", {}, what)));
      if (TERMINAL.includes(ev.type) && ev.response) onEnd(ev.response);
    });
  } catch (err) {
    if (err.name !== "AbortError") tbody.append(el("tr", {}, el("td", { class: "error" }, err.message)));
  }
}

// -- usage --------------------------------------------------------------------------------------------

function barChart(title, rows, unit) {
  const width = 640, barH = 18, gap = 6, labelW = 200;
  const max = Math.max(1e-12, ...rows.map((r) => r.value));
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${Math.max(1, rows.length) * (barH + gap)}`, role: "img",
                             "aria-label": title });
  rows.forEach((row, i) => {
    const y = i * (barH + gap);
    const w = Math.max(1, ((width - labelW - 90) * row.value) / max);
    svg.append(svgEl("text", { x: 0, y: y + 13 }, document.createTextNode(row.label)),
      svgEl("rect", { x: labelW, y, width: w, height: barH }),
      svgEl("text", { x: labelW + w + 4, y: y + 13 }, document.createTextNode(`${row.display ?? row.value} ${unit}`)));
  });
  return el("div", { class: "chart" }, el("h3", {}, title), rows.length ? svg : el("p", { class: "hint" }, "No data."));
}

function sumBy(pages, key, value) {
  const totals = new Map();
  for (const bucket of pages) {
    for (const result of bucket.results) {
      const k = key(bucket, result);
      totals.set(k, (totals.get(k) || 0) + value(result));
    }
  }
  return [...totals].map(([label, v]) => ({ label: label ?? "(none)", value: v }));
}

async function report(path, start, group) {
  const q = new URLSearchParams({ start_time: String(start), bucket_width: "1d", limit: "31" });
  if (group) q.set("group_by", group);
  const buckets = [];
  let page = null;
  do {
    if (page) q.set("page", page);
    const body = await api("GET", `${path}?${q}`);
    buckets.push(...body.data);
    page = body.has_more ? body.next_page : null;
  } while (page);
  return buckets;
}

async function loadUsage(event) {
  if (event) event.preventDefault();
  $("usage-error").textContent = "";
  const days = Math.min(31, Math.max(1, Number($("u-days").value) || 7));
  const now = Math.floor(Date.now() / 1000);
  const start = Math.floor(now / 86400) * 86400 - (days - 1) * 86400;
  try {
    const tokens = (r) => r.input_tokens + r.output_tokens;
    const day = (b) => new Date(b.start_time * 1000).toISOString().slice(0, 10);
    const money = (rows) => rows.map((r) => ({ ...r, display: `$${r.value < 0.01 ? r.value.toPrecision(3) : r.value.toFixed(4)}` }));
    const [byDay, byModel, byKey, costDay, costModel, costKey] = await Promise.all([
      report("/v1/organization/usage/completions", start, null),
      report("/v1/organization/usage/completions", start, "model"),
      report("/v1/organization/usage/completions", start, "api_key_id"),
      report("/v1/organization/costs", start, null),
      report("/v1/organization/costs", start, "model"),
      report("/v1/organization/costs", start, "api_key_id"),
    ]);
    const cost = (r) => r.amount.value;
    $("usage-charts").replaceChildren(
      barChart("Tokens by day", sumBy(byDay, day, tokens), "tokens"),
      barChart("Tokens by model", sumBy(byModel, (b, r) => r.model, tokens), "tokens"),
      barChart("Tokens by key", sumBy(byKey, (b, r) => r.api_key_id, tokens), "tokens"),
      barChart("Cost by day", money(sumBy(costDay, day, cost)), "usd"),
      barChart("Cost by model", money(sumBy(costModel, (b, r) => r.model, cost)), "usd"),
      barChart("Cost by key", money(sumBy(costKey, (b, r) => r.api_key_id, cost)), "usd"));
  } catch (err) {
    $("usage-error").textContent = err.message;
  }
}

// -- keys ---------------------------------------------------------------------------------------------

async function loadKeys() {
  $("keys-error").textContent = "";
  const body = $("key-list").querySelector("tbody");
  try {
    const keys = [];
    let after = null;
    do {
      const page = await api("GET", `/v1/organization/keys?limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      keys.push(...page.data);
      after = page.has_more ? page.last_id : null;
    } while (after);
    body.replaceChildren(...keys.map((k) => el("tr", { "data-id": k.id },
      el("td", {}, el("code", {}, k.id)), el("td", {}, k.name), el("td", {}, k.role), el("td", {}, k.project_id || ""),
      el("td", {}, el("code", {}, k.redacted_value)), el("td", {}, when(k.expires_at)),
      el("td", {}, k.allowed_models ? k.allowed_models.join(", ") : "all"),
      el("td", {}, el("button", { type: "button", onclick: () => revokeKey(k.id) }, "Revoke")))));
  } catch (err) {
    $("keys-error").textContent = err.message;
  }
}

async function createKey(event) {
  event.preventDefault();
  $("keys-error").textContent = "";
  const body = { name: $("k-name").value.trim(), role: $("k-role").value };
  if ($("k-project").value.trim()) body.project_id = $("k-project").value.trim();
  const models = $("k-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  if (models.length) body.allowed_models = models;
  const expires = toSeconds($("k-expires").value);
  if (expires !== null) body.expires_at = expires;
  try {
    const key = await api("POST", "/v1/organization/keys", body);
    $("key-secret").hidden = false;
    $("key-secret").textContent = `New key ${key.id}: ${key.value} (copy it now: it is not shown again)`;
    await loadKeys();
  } catch (err) {
    $("keys-error").textContent = err.message;
  }
}

async function revokeKey(id) {
  if (!window.confirm(`Revoke ${id}? Requests with it will fail at once.`)) return;
  try {
    await api("DELETE", `/v1/organization/keys/${encodeURIComponent(id)}`);
    await loadKeys();
  } catch (err) {
    $("keys-error").textContent = err.message;
  }
}

// -- navigation -----------------------------------------------------------------------------------------

const LOADERS = { playground: loadModels, responses: () => loadResponses(false), usage: loadUsage, keys: loadKeys };

function route() {
  const page = (location.hash || "#playground").slice(1);
  const name = page in LOADERS ? page : "playground";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${name}`;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  if (apiKey()) LOADERS[name]();
}

function init() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (key) sessionStorage.setItem(KEY_SLOT, key);
    $("key").value = "";
    showKeyState();
    route();
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_SLOT); showKeyState(); });
  $("play-form").addEventListener("submit", play);
  $("stop").addEventListener("click", () => running && running.abort());
  $("new-chat").addEventListener("click", () => { setPrevious(null); $("transcript").replaceChildren(); });
  $("filter-form").addEventListener("submit", (event) => { event.preventDefault(); loadResponses(false); });
  $("more").addEventListener("click", () => loadResponses(true));
  $("usage-form").addEventListener("submit", loadUsage);
  $("key-create").addEventListener("submit", createKey);
  window.addEventListener("hashchange", route);
  showKeyState();
  route();
}

init();
