// Renders /openapi.json: endpoints grouped by tag, their parameters, bodies and answers; schemas open on click.
"use strict";

let spec = null;

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

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

function schemaLink(schema) {
  const name = refName(schema);
  if (!name) return el("code", {}, JSON.stringify(schema));
  return el("button", { class: "ref", type: "button", onclick: () => showSchema(name) }, name);
}

function showSchema(name) {
  const schema = spec.components.schemas[name];
  document.getElementById("schema-name").textContent = name;
  const body = document.getElementById("schema-body");
  body.replaceChildren();
  const text = JSON.stringify(schema, null, 2);
  // $ref values become links to the schema they name.
  for (const part of text.split(/("#\/components\/schemas\/[^"]+")/)) {
    const match = part.match(/^"#\/components\/schemas\/([^"]+)"$/);
    body.append(match ? el("button", { class: "ref", type: "button", onclick: () => showSchema(match[1]) }, part)
      : part);
  }
  document.getElementById("schema").hidden = false;
}

function parameters(op) {
  if (!op.parameters || !op.parameters.length) return null;
  return el("table", {},
    el("tr", {}, el("th", {}, "Parameter"), el("th", {}, "In"), el("th", {}, "Description")),
    op.parameters.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
      el("td", {}, p.description || ""))));
}

function content(title, block) {
  if (!block || !block.content) return null;
  return el("p", {}, title + ": ", Object.entries(block.content).map(([type, media], i) =>
    el("span", {}, i ? ", " : "", el("span", { class: "badge" }, type), " ", schemaLink(media.schema))));
}

// A WebSocket door (a GET that upgrades): the client events it reads and what it sends.
function websocket(op) {
  const door = op["x-websocket"];
  if (!door) return null;
  return [el("p", {}, "Client events (one JSON object per text frame): ",
    door.client_events.oneOf.map((schema, i) => el("span", {}, i ? ", " : "", schemaLink(schema)))),
  el("p", {}, "Server events: " + door.server_events)];
}

function operation(path, method, op) {
  const security = op.security && op.security.length ? (op.description || "").includes("admin key")
    ? "admin key" : "API key" : "no key";
  return el("details", { "data-search": (path + " " + (op.summary || "")).toLowerCase() },
    el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()),
      el("span", { class: "path" }, path), el("span", { class: "what" }, op.summary || "")),
    el("div", { class: "body" },
      op.description ? el("p", {}, op.description) : null,
      el("p", {}, el("span", { class: "badge" }, security)),
      parameters(op),
      content("Body", op.requestBody),
      websocket(op),
      Object.entries(op.responses || {}).map(([status, answer]) =>
        content(status === "default" ? "Errors" : "Answer " + status, answer))));
}

function render() {
  document.title = spec.info.title + " " + spec.info.version + " API reference";
  document.getElementById("title").textContent = document.title;
  document.getElementById("summary").textContent = spec.info.description || "";
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["Other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  const nav = document.getElementById("tags");
  const main = document.getElementById("operations");
  for (const [tag, ops] of byTag) {
    const id = "tag-" + tag.toLowerCase().replace(/\W+/g, "-");
    nav.append(el("a", { href: "#" + id }, tag));
    main.append(el("section", { id: id }, el("h2", {}, tag), ops));
  }
}

function filter(event) {
  const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const node of document.querySelectorAll("details[data-search]")) {
    node.hidden = !words.every((word) => node.dataset.search.includes(word));
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("filter").addEventListener("input", filter);
  document.getElementById("close").addEventListener("click", () => { document.getElementById("schema").hidden = true; });
  try {
    const answer = await fetch("/openapi.json");
    spec = await answer.json();
    render();
  } catch (error) {
    document.getElementById("summary").textContent = "Could not load /openapi.json: " + error;
  }
});
