"""Bearer-token authentication and the token file.

The token lives in ``$BLOCKPLANE_HOME/token`` (0600). Comparisons are constant-time, and a
refused token is never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from fastapi import Request

from blockplane.errors import Unauthorized

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/v1/health"})


def ensure_token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


class TokenGuard:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def __call__(self, request: Request) -> None:
        if request.url.path in PUBLIC_PATHS:
            return
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            log.warning("refused %s %s: no bearer token", request.method, request.url.path)
            raise Unauthorized("this request needs Authorization: Bearer <token>")
        if not hmac.compare_digest(presented.encode(), self._token):
            log.warning("refused %s %s: wrong token", request.method, request.url.path)
            raise Unauthorized("the bearer token is not valid", code="auth.invalid")
