"""The `web_search` tool's parts: search providers behind one interface, allowed-domain rules, page fetching
and reading (readable text, the page cache). The tool itself is `parley.tools.web_search`."""
