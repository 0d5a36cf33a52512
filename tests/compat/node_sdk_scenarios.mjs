// The openai Node SDK against Parley: web_search and mcp tools, streamed and not, an approval round trip and a
// chain. Prints one JSON object per scenario on stdout; the Python test asserts on them.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.PARLEY_BASE_URL, apiKey: "sk-local", maxRetries: 0 });
const out = (name, value) => console.log(JSON.stringify({ name, value }));

// web_search, not streamed, with its sources.
const searched = await client.responses.create({
  model: "web-agent", input: "paris capital", tools: [{ type: "web_search" }],
  include: ["web_search_call.action.sources"],
});
out("web_search", searched);

// web_search, streamed: every event as the SDK parsed it.
const stream = await client.responses.create({
  model: "web-agent", input: "paris capital", tools: [{ type: "web_search" }], stream: true,
});
const events = [];
for await (const event of stream) events.push(event);
out("web_search_stream", events);

// The SDK's stream helper and its accumulated final response.
const helper = client.responses.stream({ model: "web-agent", input: "berlin", tools: [{ type: "web_search" }] });
const final = await helper.finalResponse();
out("web_search_helper", { output_text: final.output_text, output: final.output });

// An operator's MCP server (stdio), no approval.
const called = await client.responses.create({
  model: "mcp-agent", input: JSON.stringify([[{ call: "local__add", arguments: { a: 2, b: 5 } }]]),
  tools: [{ type: "mcp", server_label: "local", require_approval: "never" }],
});
out("mcp", called);

// An approval round trip by previous_response_id.
const asked = await client.responses.create({
  model: "mcp-agent", input: JSON.stringify([[{ call: "local__add", arguments: { a: 1, b: 1 } }]]),
  tools: [{ type: "mcp", server_label: "local" }],
});
const request = asked.output.find((item) => item.type === "mcp_approval_request");
const approved = await client.responses.create({
  model: "mcp-agent", previous_response_id: asked.id, tools: [{ type: "mcp", server_label: "local" }],
  input: [{ type: "mcp_approval_response", approval_request_id: request.id, approve: true }],
});
out("mcp_approval", { asked, approved });

// A container shell through the SDK's stream helper: the live output events accumulate into its final response.
const shell = client.responses.stream({
  model: "agent", tools: [{ type: "shell", environment: { type: "container_auto" } }],
  input: JSON.stringify({ call: "shell", arguments: { commands: ["echo one", "echo two >&2; exit 4"] } }),
});
const shellEvents = [];
for await (const event of shell) shellEvents.push(event.type);
const shellFinal = await shell.finalResponse();
out("shell_helper", { events: shellEvents, output: shellFinal.output });

// tool_choice naming one tool of an MCP server.
const chosen = await client.responses.create({
  model: "mcp-agent", input: JSON.stringify([[{ call: "local__add", arguments: { a: 3, b: 4 } }]]),
  tools: [{ type: "mcp", server_label: "local", require_approval: "never" }],
  tool_choice: { type: "mcp", server_label: "local", name: "add" },
});
out("mcp_choice", chosen);

// A deployment whose requests_per_minute (1) is spent: the SDK's RateLimitError. Three tries: a UTC minute may
// end between two of them, never between all three.
let limited = null;
for (let i = 0; i < 3 && limited === null; i++) {
  try {
    await client.responses.create({ model: "rpm-one", input: `try ${i}` });
  } catch (err) {
    limited = { status: err.status, name: err.constructor.name, code: err.code, param: err.param, type: err.type,
                retryAfter: err.headers?.get?.("retry-after") ?? null };
  }
}
out("rate_limited", limited);
