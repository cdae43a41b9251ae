"""The page URL normal form (shiftpeer/urls.py) that shifts are stored and asked for in."""

from __future__ import annotations

import pytest

from shiftpeer.urls import BadHref, lookup_forms, normalize_href


@pytest.mark.parametrize("given, normal", [
    ("https://other.net", "https://other.net/"),
    ("https://other.net/#top", "https://other.net/"),
    ("https://other.net/#", "https://other.net/"),
    ("http://Example.ORG:8080/b", "http://example.org:8080/b"),
    ("HTTP://EXAMPLE.org:80/b?q=1", "http://example.org/b?q=1"),
    ("https://example.org:443", "https://example.org/"),
    ("https://example.org:80/", "https://example.org:80/"),
    ("http://example.org:443/", "http://example.org:443/"),
    ("https://example.org?q=A", "https://example.org/?q=A"),
    ("https://example.org/Path/%7Euser?Q=%2F#frag", "https://example.org/Path/%7Euser?Q=%2F"),
    ("https://mail.example.org/#/inbox/3", "https://mail.example.org/#/inbox/3"),
    ("https://app.example.org/#!/settings", "https://app.example.org/#!/settings"),
    ("https://User:Pw@Example.org:8443/x", "https://User:Pw@example.org:8443/x"),
    ("http://[2001:DB8::1]:80/", "http://[2001:db8::1]/"),
    ("http://[2001:db8::1]:8080/", "http://[2001:db8::1]:8080/"),
    ("https://xn--bcher-kva.example/", "https://xn--bcher-kva.example/"),
])
def test_normal_form(given, normal):
    """Scheme and host lower case, default port and place fragments dropped, empty path "/"; routes
    in the fragment, path, query and userinfo are kept as given."""
    assert normalize_href(given) == normal
    assert normalize_href(normal) == normal  # idempotent


@pytest.mark.parametrize("bad", ["not-a-url", "", "ftp://example.org/", "https:///path", "mailto:a@b.org",
                                 "https://example.org:99999/", "https://example.org:port/", "//example.org/",
                                 "http://[::1/"])
def test_not_a_page_url(bad):
    """Anything but an absolute http(s) URL with a host and a valid port is refused with a reason."""
    with pytest.raises(BadHref):
        normalize_href(bad)


def test_lookup_forms_add_the_raw_string_only_when_it_differs():
    """A query also looks up the string as given, for shifts stored before normalization."""
    assert lookup_forms("https://other.net/") == ["https://other.net/"]
    assert lookup_forms("https://Other.net") == ["https://other.net/", "https://Other.net"]
