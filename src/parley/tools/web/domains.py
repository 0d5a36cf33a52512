"""`filters.allowed_domains`: a URL is allowed when its host is one of the domains or a subdomain of one.

OpenAI: "Subdomains of the provided domains are allowed as well", e.g. `openai.com` allows
`platform.openai.com`. Entries are host names (no scheme, path or port); matching is by whole labels, so
`ai.com` does not allow `openai.com`.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


def allowed(url: str, domains: tuple[str, ...]) -> bool:
    """Whether `url` may be used under `allowed_domains` (always, when there are none)."""
    if not domains:
        return True
    host = host_of(url)
    if host is None:
        return False
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def site_operator(domains: tuple[str, ...]) -> str:
    """A `site:` clause that asks engines for the allowed domains only (results are still filtered here)."""
    if not domains:
        return ""
    if len(domains) == 1:
        return f" site:{domains[0]}"
    return " (" + " OR ".join(f"site:{domain}" for domain in domains) + ")"
