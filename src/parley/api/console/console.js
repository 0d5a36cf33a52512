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

function playRequest() {
  const body = { model: $("model").value.trim(), input: $("input").value, stream: true, store: true };
  const instructions = $("instructions").value.trim();
  if (instructions) body.instructions = instructions;
  if ($("effort").value) body.reasoning = { effort: $("effort").value };
  if ($("continue").checked && previousId) body.previous_response_id = previousId;
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

async function play(event) {
  event.preventDefault();
  $("play-error").textContent = "";
  let body;
  try {
    body = playRequest();
  } catch (err) {
    $("play-error").textContent = err.message;
    return;
  }
  const turn = el("div", { class: "turn" }, el("h3", {}, "You"), el("div", { class: "text" }, body.input));
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
        setPrevious(ev.response.id);
        footer.textContent = `${ev.response.status} · ${usageLine(ev.response.usage)}`;
        if (ev.response.error) $("play-error").textContent = ev.response.error.message;
      } else if (ev.type === "error") {
        $("play-error").textContent = `${ev.code || "error"}: ${ev.message}`;
      }
    });
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

async function openResponse(id) {
  if (following) following.abort();
  const detail = $("detail");
  detail.hidden = false;
  detail.replaceChildren(el("p", {}, `Loading ${id}…`));
  try {
    const response = await api("GET", `/v1/responses/${encodeURIComponent(id)}`);
    const inputs = await api("GET", `/v1/responses/${encodeURIComponent(id)}/input_items?order=asc&limit=100`);
    const chain = await chainOf(response);
    const timeline = el("table", { class: "timeline" }, el("tbody"));
    const summary = (r) => `${r.model} · ${r.status} · created ${when(r.created_at)}${r.background ? " · background" : ""}`;
    const status = el("p", { class: "status" }, summary(response));
    const usage = el("p", { class: "usage-line" }, usageLine(response.usage));
    const outputs = el("div", { class: "outputs" }, (response.output || []).map(itemView));
    detail.replaceChildren(
      el("h2", {}, response.id), status, usage,
      el("h3", {}, "Chain"),
      el("ol", { class: "chain" }, [...chain, response].map((r) => el("li", {},
        el("a", { href: "#responses", onclick: (e) => { e.preventDefault(); openResponse(r.id); } }, r.id),
        ` ${r.status}`))),
      el("h3", {}, "Input items"),
      el("div", { class: "inputs" }, inputs.data.map(itemView)),
      el("h3", {}, "Output items"),
      outputs,
      el("h3", {}, "Event timeline"),
      response.background ? timeline : el("p", { class: "hint" },
        "Only background responses keep their events (POST with background: true)."),
      el("details", {}, el("summary", {}, "Raw response"), el("pre", {}, pretty(response))));
    if (response.background) {
      followEvents(response.id, timeline.querySelector("tbody"), (final) => {  // a live run ended: show its end
        status.textContent = summary(final);
        usage.textContent = usageLine(final.usage);
        outputs.replaceChildren(...(final.output || []).map(itemView));
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
