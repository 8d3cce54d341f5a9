"""Bearer tokens for ``serve`` (RFC 6750 2.1: ``Authorization: Bearer <token>``).

:class:`TokenCheck` is ASGI middleware: with tokens configured, a request that writes (any
method but GET, HEAD and OPTIONS) needs one of them, and with ``reads`` every request does
(CORS preflight ``OPTIONS`` requests carry no credentials and pass). Otherwise the answer is
401 with ``WWW-Authenticate: Bearer`` (RFC 6750 3), sent before the request body is read, so
nothing is stored. The given token is compared with every configured one by
:func:`hmac.compare_digest` (time independent of where they differ); no token is ever logged
(the access log, ``web/access.py``, has no headers).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

#: methods that only read
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REALM = "dicomweb-archive"


def parse_tokens(text: str) -> list[str]:
    """The tokens of a token file: one per line; blank lines and lines starting with ``#``
    are left out, as is the white space around a token."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class TokenCheck:
    """ASGI middleware asking for a bearer token (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, tokens: Iterable[str], reads: bool = False) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.reads = reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._needs_token(scope["method"]):
            await self.app(scope, receive, send)
            return
        given = _bearer(scope)
        if given is not None and self._known(given):
            await self.app(scope, receive, send)
            return
        challenge = f'Bearer realm="{REALM}"'
        if given is None:
            message = b"this request needs a bearer token (Authorization: Bearer <token>)\n"
        else:
            challenge += ', error="invalid_token"'
            message = b"the bearer token is not one this server accepts\n"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", challenge.encode()),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(message)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": message})

    def _needs_token(self, method: str) -> bool:
        if method == "OPTIONS":
            return False
        return method not in READ_METHODS or self.reads

    def _known(self, given: bytes) -> bool:
        found = False
        for token in self.tokens:  # every one compared: the time says nothing of which
            found |= hmac.compare_digest(given, token)
        return found


def _bearer(scope: Scope) -> bytes | None:
    """The token of the request's ``Authorization: Bearer`` header, if any."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return bytes(token.strip())
    return None
