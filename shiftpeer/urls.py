"""One normal form for page URLs, so a shift and the page that asks for it meet.

The browser extension asks for shifts with ``location.href`` on every page load; a shift's ``href`` is
whatever its author's node was given. Both sides go through ``normalize_href`` (shifts.py on create
and edit, queries.py and shifts.py on every ``href`` filter), and the store's exact-match ``href``
index does the rest. The rules (docs/flows.md, "Page URLs"):

- the scheme (http or https only) and the host are lower-cased; a default port (80 for http, 443 for
  https) is dropped, any other port kept; userinfo is kept as given;
- an empty path becomes ``/``;
- the fragment is dropped (``#top`` names a place on the same page) unless it starts with ``/`` or
  ``!``: single-page apps route there (``#/inbox``, ``#!/settings``), so it names a different page;
- nothing else changes: path and query keep their percent-encoding and case as given, and a host is
  not converted to or from IDNA punycode (browsers report punycode, so give hosts that way).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SCHEMES = {"http": 80, "https": 443}
#: Fragments that are routes of a single-page app rather than places on a page.
ROUTE_FRAGMENT_STARTS = ("/", "!")


class BadHref(ValueError):
    """Not an absolute http(s) URL with a host; the message ("is ...") says what is wrong."""


def normalize_href(href: str) -> str:
    """The normal form of an absolute http(s) page URL; BadHref for anything else."""
    if not isinstance(href, str) or not href:
        raise BadHref("is empty: give the page URL")
    try:
        parts = urlsplit(href)
        host = parts.hostname
        port = parts.port
    except ValueError as e:
        raise BadHref(f"is not a valid URL ({e}): {href[:200]!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not host:
        raise BadHref(f"is not an absolute http:// or https:// URL with a host: {href[:200]!r}")
    netloc = f"[{host}]" if ":" in host else host
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    if port is not None and port != SCHEMES[scheme]:
        netloc = f"{netloc}:{port}"
    fragment = parts.fragment if parts.fragment.startswith(ROUTE_FRAGMENT_STARTS) else ""
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, fragment))


def lookup_forms(href: str) -> list[str]:
    """The ``href`` index values a query for ``href`` looks up: its normal form, and the string as given
    when that differs (shifts stored before normalization keep the href their author typed)."""
    normal = normalize_href(href)
    return [normal] if normal == href else [normal, href]
