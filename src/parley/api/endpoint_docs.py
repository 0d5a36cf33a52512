"""What GET /openapi.json says about each endpoint, by method and path template (api/openapi.py joins it with the
route table). A route added without an entry here still appears, marked undocumented, and
tests/api/test_openapi.py fails until it has one. Request bodies name the pydantic model the endpoint validates
with ("module:Model", imported when the document is built); answers name a schema of api/openapi.py's SCHEMAS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Auth = Literal["project", "admin", "none", "metrics"]


@dataclass(frozen=True, slots=True)
class EndpointDoc:
    summary: str
    tag: str
    description: str = ""
    auth: Auth = "project"  # project: a project key; admin: an admin key; metrics: as the `metrics` setting says
    body: str | None = None  # "module:Model" of a JSON body, or "multipart" (a file upload)
    returns: str = "Object"  # a schema name of api/openapi.py's SCHEMAS
    media_type: str = "application/json"  # of the answer
    streams: bool = False  # may answer text/event-stream (`stream: true`)
    query: tuple[str, ...] = ()  # query parameters, described in api/openapi.py's QUERY
    status: int = 200


@dataclass(frozen=True, slots=True)
class WebSocketDoc:
    """A WebSocket door: a GET with `Upgrade: websocket`, answered 101 (or an HTTP error before any upgrade). Its
    client events are the pydantic models it validates them with ("module:Model"); `server_events` says what it
    sends."""

    summary: str
    tag: str
    description: str
    client_events: tuple[str, ...]
    server_events: str


_PAGE = ("limit", "order", "after", "before")
_R = "Responses"
_C = "Conversations"
_F = "Files"
_V = "Vector stores"
_K = "Containers"
_P = "Prompts"
_M = "Models"
_O = "Organization"
_S = "Operations"
_REQUESTS = "parley.schema.requests:CreateResponseRequest"
_VS = "parley.schema.vector_stores"

DOCS: dict[tuple[str, str], EndpointDoc] = {
    ("GET", "/health"): EndpointDoc("Liveness: the process answers", _S, auth="none", returns="Health"),
    ("GET", "/ready"): EndpointDoc(
        "Readiness: the database and every configured upstream answer, and local models are ready", _S,
        "503 with the same body when a check fails. Checks are cached for `readiness_cache_s`.",
        auth="none", returns="Ready"),
    ("GET", "/metrics"): EndpointDoc(
        "Prometheus metrics (text format, or OpenMetrics when accepted)", _S,
        "Open, admin key only, or not served, as the `metrics` setting says (default: open on a loopback bind).",
        auth="metrics", returns="Text", media_type="text/plain"),
    ("GET", "/openapi.json"): EndpointDoc("This OpenAPI 3.1 document", _S, auth="none"),
    ("GET", "/docs"): EndpointDoc("The API reference, rendered from /openapi.json (HTML, works offline)", _S,
                                  auth="none", returns="Text", media_type="text/html"),
    ("GET", "/docs/{asset}"): EndpointDoc("The reference page's script and style sheet", _S, auth="none",
                                          returns="Text", media_type="text/plain"),
    ("GET", "/console"): EndpointDoc(
        "The web console: playground, response explorer, usage and keys (HTML, works offline)", _S,
        "Static pages holding no secret: the user pastes a key, kept in sessionStorage and sent as a bearer "
        "header on each API call, so the console can do what that key can.", auth="none", returns="Text",
        media_type="text/html"),
    ("GET", "/console/{asset}"): EndpointDoc("The console's script and style sheet", _S, auth="none",
                                             returns="Text", media_type="text/plain"),
    ("POST", "/v1/responses"): EndpointDoc(
        "Create a model response", _R,
        "Runs the model (and built-in tools between its turns) on `input` and any stored context. `stream: true` "
        "answers Server-Sent Events; `background: true` queues the run. The same path also accepts a WebSocket "
        "upgrade (WebSocket mode: GET /v1/responses).", body=_REQUESTS, returns="Response", streams=True),
    ("GET", "/v1/responses/list"): EndpointDoc(
        "List stored responses (a Parley extension)", _R,
        "The console's response explorer: the key's project's stored responses without `output` (retrieve one "
        "for its items), newest first, filtered by exact `model`, `status`, `metadata[KEY]=VALUE` (repeatable) and "
        "`created_after` (inclusive) / `created_before` (exclusive) in unix seconds; an unknown parameter is a 400.",
        returns="List", query=(*_PAGE, "model", "status", "created_after", "created_before", "metadata[KEY]")),
    ("POST", "/v1/responses/input_tokens"): EndpointDoc(
        "Count the input tokens a create request would use", _R, body=_REQUESTS, returns="InputTokens"),
    ("POST", "/v1/responses/compact"): EndpointDoc(
        "Compact a context into its user messages and one compaction item", _R,
        body="parley.schema.compaction:CompactRequest", returns="Compaction"),
    ("GET", "/v1/responses/{response_id}"): EndpointDoc(
        "Retrieve a response", _R, "A stored response, or a foreground one still running on this server "
        "(`in_progress`, its output so far). With `stream=true`, replays a background response's events and "
        "follows it.",
        returns="Response", streams=True, query=("include", "stream", "starting_after")),
    ("DELETE", "/v1/responses/{response_id}"): EndpointDoc(
        "Delete a response", _R, "A foreground response still running is a 409 `response_in_progress`.",
        returns="Deleted"),
    ("POST", "/v1/responses/{response_id}/cancel"): EndpointDoc(
        "Cancel a background response", _R, returns="Response"),
    ("GET", "/v1/responses/{response_id}/input_items"): EndpointDoc(
        "List a response's input items", _R, returns="List", query=(*_PAGE, "include")),
    ("GET", "/v1/responses/{response_id}/usage"): EndpointDoc(
        "A response's tokens, cost and timeline (a Parley extension)", _R,
        "The console's explorer: the response's usage records (one per run that reached a model, its model turns "
        "summed) added up — tokens, built-in tool calls, cost in USD from the configured prices — and each run's "
        "latency, time to first token and `timeline` of server-side timing marks (`started_at` in Unix ms, then "
        "each mark's `event` and `ms` after it: upstream_opened, first_output, turn_done, tool_call_started, "
        "tool_call_done, finished). In the key's project only; a `store: false` response is found by its id too.",
        returns="ResponseUsage"),
    ("GET", "/v1/models"): EndpointDoc(
        "List models", _M, "With an `anthropic-version` header: the Anthropic Models API's shape (`after_id`, "
        "`before_id`, `limit`).", returns="List"),
    ("POST", "/v1/messages"): EndpointDoc(
        "Create a message (the Anthropic Messages API)", "Anthropic Messages",
        "A translation into the same responses service: keys by `x-api-key` or bearer, nothing stored, "
        "`stream: true` answers Anthropic's events; `?beta=true` is accepted. Errors are Anthropic's "
        "`{type: error, error: {type, message}}`.", body="parley.schema.messages:CreateMessageRequest",
        returns="Message", streams=True),
    ("POST", "/v1/messages/count_tokens"): EndpointDoc(
        "Count a message request's input tokens (the Anthropic Messages API)", "Anthropic Messages",
        body="parley.schema.messages:CountTokensRequest", returns="MessageTokens"),
    ("GET", "/v1/models/{model}"): EndpointDoc("Retrieve a model", _M, returns="Model"),
    ("DELETE", "/v1/models/{model}"): EndpointDoc("Delete a fine-tuned model (refused: none exist here)", _M,
                                                  returns="Deleted"),
    ("POST", "/v1/conversations"): EndpointDoc(
        "Create a conversation", _C, body="parley.schema.conversations:CreateConversationRequest",
        returns="Conversation"),
    ("GET", "/v1/conversations/{conversation_id}"): EndpointDoc("Retrieve a conversation", _C,
                                                                returns="Conversation"),
    ("POST", "/v1/conversations/{conversation_id}"): EndpointDoc(
        "Update a conversation's metadata", _C, body="parley.schema.conversations:UpdateConversationRequest",
        returns="Conversation"),
    ("DELETE", "/v1/conversations/{conversation_id}"): EndpointDoc("Delete a conversation", _C, returns="Deleted"),
    ("POST", "/v1/conversations/{conversation_id}/items"): EndpointDoc(
        "Add items to a conversation", _C, body="parley.schema.conversations:AddItemsRequest", returns="List",
        query=("include",)),
    ("GET", "/v1/conversations/{conversation_id}/items"): EndpointDoc(
        "List a conversation's items", _C, returns="List", query=(*_PAGE, "include")),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): EndpointDoc(
        "Retrieve a conversation item", _C, returns="Item", query=("include",)),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): EndpointDoc(
        "Delete a conversation item", _C, returns="Conversation"),
    ("POST", "/v1/files"): EndpointDoc("Upload a file (multipart, streamed to storage)", _F, body="multipart",
                                       returns="File"),
    ("GET", "/v1/files"): EndpointDoc("List files", _F, returns="List", query=(*_PAGE, "purpose")),
    ("GET", "/v1/files/{file_id}"): EndpointDoc("Retrieve a file's metadata", _F, returns="File"),
    ("DELETE", "/v1/files/{file_id}"): EndpointDoc("Delete a file", _F, returns="Deleted"),
    ("GET", "/v1/files/{file_id}/content"): EndpointDoc("Download a file's bytes", _F, returns="Binary",
                                                        media_type="application/octet-stream"),
    ("POST", "/v1/vector_stores"): EndpointDoc("Create a vector store", _V, body=f"{_VS}:CreateVectorStoreRequest",
                                               returns="VectorStore"),
    ("GET", "/v1/vector_stores"): EndpointDoc("List vector stores", _V, returns="List", query=_PAGE),
    ("GET", "/v1/vector_stores/{vector_store_id}"): EndpointDoc("Retrieve a vector store", _V, returns="VectorStore"),
    ("POST", "/v1/vector_stores/{vector_store_id}"): EndpointDoc(
        "Update a vector store", _V, body=f"{_VS}:UpdateVectorStoreRequest", returns="VectorStore"),
    ("DELETE", "/v1/vector_stores/{vector_store_id}"): EndpointDoc("Delete a vector store", _V, returns="Deleted"),
    ("POST", "/v1/vector_stores/{vector_store_id}/search"): EndpointDoc(
        "Search a vector store", _V, body=f"{_VS}:SearchRequest", returns="Page"),
    ("POST", "/v1/vector_stores/{vector_store_id}/files"): EndpointDoc(
        "Add a file to a vector store (ingested in the background)", _V,
        body=f"{_VS}:CreateVectorStoreFileRequest", returns="VectorStoreFile"),
    ("GET", "/v1/vector_stores/{vector_store_id}/files"): EndpointDoc(
        "List a vector store's files", _V, returns="List", query=(*_PAGE, "filter")),
    ("GET", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): EndpointDoc(
        "Retrieve a vector store file", _V, returns="VectorStoreFile"),
    ("POST", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): EndpointDoc(
        "Update a vector store file's attributes", _V, body=f"{_VS}:UpdateVectorStoreFileRequest",
        returns="VectorStoreFile"),
    ("DELETE", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): EndpointDoc(
        "Remove a file from a vector store", _V, returns="Deleted"),
    ("GET", "/v1/vector_stores/{vector_store_id}/files/{file_id}/content"): EndpointDoc(
        "A vector store file's parsed text", _V, returns="Page"),
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches"): EndpointDoc(
        "Add several files to a vector store", _V, body=f"{_VS}:CreateFileBatchRequest", returns="FileBatch"),
    ("GET", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}"): EndpointDoc(
        "Retrieve a file batch", _V, returns="FileBatch"),
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel"): EndpointDoc(
        "Cancel a file batch", _V, returns="FileBatch"),
    ("GET", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files"): EndpointDoc(
        "List a file batch's files", _V, returns="List", query=(*_PAGE, "filter")),
    ("POST", "/v1/containers"): EndpointDoc("Create a container (a sandboxed file system for code_interpreter)", _K,
                                            body="parley.schema.containers:CreateContainerRequest",
                                            returns="Container"),
    ("GET", "/v1/containers"): EndpointDoc("List containers", _K, returns="List", query=(*_PAGE, "name")),
    ("GET", "/v1/containers/{container_id}"): EndpointDoc("Retrieve a container", _K, returns="Container"),
    ("DELETE", "/v1/containers/{container_id}"): EndpointDoc("Delete a container", _K, returns="Deleted"),
    ("POST", "/v1/containers/{container_id}/files"): EndpointDoc(
        "Add a file to a container: an upload (multipart) or a File by `file_id` (JSON)", _K, body="multipart",
        returns="ContainerFile"),
    ("GET", "/v1/containers/{container_id}/files"): EndpointDoc("List a container's files", _K, returns="List",
                                                                query=_PAGE),
    ("GET", "/v1/containers/{container_id}/files/{file_id}"): EndpointDoc("Retrieve a container file", _K,
                                                                          returns="ContainerFile"),
    ("DELETE", "/v1/containers/{container_id}/files/{file_id}"): EndpointDoc("Delete a container file", _K,
                                                                             returns="Deleted"),
    ("GET", "/v1/containers/{container_id}/files/{file_id}/content"): EndpointDoc(
        "Download a container file's bytes", _K, returns="Binary", media_type="application/octet-stream"),
    ("POST", "/v1/prompts"): EndpointDoc("Create a prompt template", _P, body="parley.schema.prompts:PromptBody",
                                         returns="Prompt"),
    ("GET", "/v1/prompts"): EndpointDoc("List prompt templates (latest versions)", _P, returns="List", query=_PAGE),
    ("GET", "/v1/prompts/{prompt_id}"): EndpointDoc("Retrieve a prompt template's latest version", _P,
                                                    returns="Prompt"),
    ("DELETE", "/v1/prompts/{prompt_id}"): EndpointDoc("Delete a prompt template", _P, returns="Deleted"),
    ("POST", "/v1/prompts/{prompt_id}/versions"): EndpointDoc(
        "Add a version to a prompt template", _P, body="parley.schema.prompts:PromptBody", returns="Prompt"),
    ("GET", "/v1/prompts/{prompt_id}/versions/{version}"): EndpointDoc("Retrieve a prompt template version", _P,
                                                                       returns="Prompt"),
    ("GET", "/v1/organization/usage/completions"): EndpointDoc(
        "Token usage by time bucket (OpenAI's usage API shape)", _O, auth="admin", returns="Page",
        query=("start_time", "end_time", "bucket_width", "group_by", "project_ids", "api_key_ids", "models",
               "limit", "page")),
    ("GET", "/v1/organization/costs"): EndpointDoc(
        "Costs by time bucket (OpenAI's costs API shape)", _O, auth="admin", returns="Page",
        query=("start_time", "end_time", "bucket_width", "group_by", "project_ids", "limit", "page")),
    ("POST", "/v1/organization/keys"): EndpointDoc(
        "Create an API key (its secret is shown once)", _O, auth="admin", body="parley.schema.keys:CreateKeyRequest",
        returns="ApiKey"),
    ("GET", "/v1/organization/keys"): EndpointDoc("List API keys", _O, auth="admin", returns="List",
                                                  query=("project_id", "after", "limit")),
    ("GET", "/v1/organization/keys/{key_id}"): EndpointDoc("Retrieve an API key", _O, auth="admin",
                                                           returns="ApiKey"),
    ("POST", "/v1/organization/keys/{key_id}"): EndpointDoc(
        "Update an API key (name, expiry, allowed models, limits)", _O, auth="admin",
        body="parley.schema.keys:UpdateKeyRequest", returns="ApiKey"),
    ("DELETE", "/v1/organization/keys/{key_id}"): EndpointDoc("Revoke an API key", _O, auth="admin",
                                                              returns="Deleted"),
}

# WebSocket doors by path (api/routes.py's websocket_routes()); api/openapi.py lists each as a GET operation.
WEBSOCKETS: dict[str, WebSocketDoc] = {
    "/v1/responses": WebSocketDoc(
        "WebSocket mode: the Responses API over one connection (`client.responses.connect()`, Codex)", _R,
        "The upgrade is authenticated like a request: a bad key is answered 401 (OpenAI's error shape) before "
        "any upgrade. Each text frame from the client is one event: `response.create` carries the fields of "
        "POST /v1/responses, validated and run the same way (`stream` is implicit; `background: true` is refused "
        "with an error event), plus `stream_id` (a lane: first in, first out within a lane, lanes run "
        "concurrently) and `generate: false` (prepare the response and its input without calling the model: an "
        "id to chain from); `response.steer` adds user input to a running response in a tool loop, which takes "
        "it in its next model turn. A connection keeps its recent responses in memory: a chain continues from "
        "them with no read of the chain (a deleted stored response is not continued), and `store: false` "
        "chains continue only on that connection (elsewhere: 400 "
        "`previous_response_not_found`). Limits (`[websocket]`, by default): 16 responses in flight per "
        "connection, the others queued; 32 lanes (more: `invalid_stream_id`); after 60 minutes "
        "`websocket_connection_limit_reached` and a 1001 close, on which the SDK reconnects.",
        client_events=("parley.schema.websocket:ResponseCreateEvent", "parley.schema.websocket:SteerEvent"),
        server_events="One JSON object per text frame (the SDK's `ResponsesServerEvent`): the streaming events of "
        "each response as POST /v1/responses streams them, numbered from `sequence_number` 0 per response, with "
        "the request's `stream_id` (none on the default lane); `error` events `{type, status, error: {type, code, "
        "message, param}}`, after which the socket stays open; `response.steer.accepted` and "
        "`response.steer.failed` (`error.code`: response_not_found, response_already_completed, "
        "response_not_active, steering_not_supported, invalid_input, too_many_pending_steers)."),
}
