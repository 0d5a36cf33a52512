"""The `mcp` tool: Parley as an MCP client of the servers a request (or the operator's config) names.

`names` (the function each server tool is offered as), `policy` (allowed_tools, require_approval), `items`
(the items and errors it produces, what the model reads), `guard` (the SSRF guard for client-given URLs),
`client` (one MCP session per server), `tool` (one server tool as a built-in tool), `replay` (stored MCP
items for later turns). Set up per request by services/mcp.py.
"""
