"""Random ids and tokens that people type on a command line."""

from __future__ import annotations

import re
import secrets
import string

_FIRST = string.ascii_letters + string.digits


def new_token(nbytes: int = 16) -> str:
    """A random URL-safe string of about ``8 * nbytes`` bits that never starts with '-' or '_'.

    token_urlsafe alone starts with '-' one time in 32, and argparse then reads
    `shiftpeer shift publish -abc` as an unknown option instead of the shift's id.
    """
    return secrets.choice(_FIRST) + secrets.token_urlsafe(nbytes)[1:]


#: Base32 characters of the author's account id a bound document id starts with: 80 bits of the author's
#: public key, so no one can make a key whose id matches another author's prefix by trying keys.
AUTHOR_TAG_CHARS = 16
#: A bound id: an optional kind prefix (``cm-``, ``notice-``), the author tag, then a dot. Ids made by older
#: versions (``new_token``, ``cm-`` + token) never hold a dot, so they never look bound.
_BOUND_RE = re.compile(r"^(?:[a-z]+-)?([a-z2-7]{%d})\." % AUTHOR_TAG_CHARS)


def bound_id(author: str, prefix: str = "") -> str:
    """A new document id that names its author: ``PREFIX`` + the first 16 characters of the author's account
    id + ``.`` + a random token. Every node refuses a document whose bound id names someone other than its
    signing author (``names_other_author``), so nobody can take over a shift id they saw by writing a
    revision of their own under it on a node that does not hold the shift yet."""
    return f"{prefix}{author[:AUTHOR_TAG_CHARS]}.{new_token(12)}"


def author_tag(docid: str) -> str | None:
    """The author tag of a bound id (the first 16 characters of its author's account id); None for an id that
    is not bound. Every node refuses a revision under it by anyone else, so the tag says who wrote it."""
    if "." not in docid:
        return None
    m = _BOUND_RE.match(docid)
    return m.group(1) if m is not None else None


def names_other_author(docid: str, author: str) -> bool:
    """True when ``docid`` is a bound id whose author tag is not ``author``'s (ids that are not bound: False)."""
    tag = author_tag(docid)
    return tag is not None and not author.startswith(tag)
