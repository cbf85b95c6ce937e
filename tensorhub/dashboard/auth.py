"""Who may read the dashboard, and which requests may change anything.

- With a token (required when the server listens beyond loopback), every request needs it: the
  ``Authorization: Bearer <token>`` header, or ``?token=<token>`` once, which sets an HttpOnly,
  SameSite=Strict cookie and redirects to the same page without the token in its address.
  Tokens are compared in constant time (``hmac.compare_digest``).
- Without a token (loopback only), requests must name a loopback host in their ``Host`` header,
  so a web page elsewhere cannot read the dashboard through DNS rebinding.
- Actions (POST) need the ``X-Tensorhub-Action`` header, which a page on another origin cannot
  send without a CORS preflight this server never grants, and a same-origin ``Origin`` if any.
"""
from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

COOKIE = "tensorhub_dashboard"
ACTION_HEADER = "X-Tensorhub-Action"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0"), is_loopback("10.1.2.3")
    (True, True, False, False)
    """
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a presented token with the configured one.

    >>> token_matches("s3cret", "s3cret"), token_matches("s3cret", "guess"), token_matches("s3cret", None)
    (True, False, False)
    """
    if not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def host_name(host_header: str | None) -> str:
    """The host part of a ``Host`` header (``[::1]:8765`` → ``::1``)."""
    if not host_header:
        return ""
    return (urlsplit(f"//{host_header}").hostname or "").lower()


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """True when there is no ``Origin`` header (not a cross-site browser request) or it names our host."""
    if origin is None:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == (host_header or "").lower()
