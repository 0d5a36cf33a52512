"""Retrieval's building blocks: text out of files (extract), URLs fetched through the SSRF guard (fetch), and
the chunking and embedding the vector stores use."""
