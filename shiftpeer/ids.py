"""Random ids and tokens that people type on a command line."""

from __future__ import annotations

import secrets
import string

_FIRST = string.ascii_letters + string.digits


def new_token(nbytes: int = 16) -> str:
    """A random URL-safe string of about ``8 * nbytes`` bits that never starts with '-' or '_'.

    token_urlsafe alone starts with '-' one time in 32, and argparse then reads
    `shiftpeer shift publish -abc` as an unknown option instead of the shift's id.
    """
    return secrets.choice(_FIRST) + secrets.token_urlsafe(nbytes)[1:]
