"""ASGI middleware of the API: request size limits and ``Idempotency-Key`` replay.

Pure ASGI (no BaseHTTPMiddleware) so streaming responses such as ``/v1/events`` pass through
untouched. Owns no feature logic.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections import defaultdict
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blockplane.store.idempotency import IdempotencyStore, StoredResponse

MAX_BODY_BYTES = 1024 * 1024
MAX_KEY_LENGTH = 200
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def problem_response(status: int, code: str, detail: str) -> tuple[Message, Message]:
    """The two ASGI messages of a problem+json answer (``detail`` starts with its title)."""
    body = json.dumps(
        {
            "type": f"https://blockplane.dev/problems/{code}",
            "title": detail.split(":")[0],
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


async def send_problem(send: Send, status: int, code: str, detail: str) -> None:
    start, body = problem_response(status, code, detail)
    await send(start)
    await send(body)


class BodySizeLimit:
    """Refuse request bodies over ``MAX_BODY_BYTES`` with 413, before any handler runs."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await send_problem(
            send,
            413,
            "request.too_large",
            f"Request too large: the body may be at most {self.limit} bytes",
        )


class IdempotencyKeys:
    """A repeated ``Idempotency-Key`` returns the first answer and does not act twice."""

    def __init__(self, app: ASGIApp, store: IdempotencyStore, token: str) -> None:
        self.app = app
        self.store = store
        self._authorization = f"Bearer {token}".encode()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        raw = headers.get(b"idempotency-key")
        presented = headers.get(b"authorization", b"")
        # Unauthenticated requests go straight on to be refused; nothing is replayed to them.
        if raw is None or not hmac.compare_digest(presented, self._authorization):
            await self.app(scope, receive, send)
            return
        key = raw.decode(errors="replace")
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            await send_problem(
                send,
                400,
                "idempotency.invalid",
                f"Invalid input: Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable characters",
            )
            return
        async with self._locks[key]:
            stored = await asyncio.to_thread(self.store.get, key)
            if stored is not None:
                await self._replay(stored, scope, send)
                return
            captured: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

            async def capture(message: Message) -> None:
                if message["type"] == "http.response.start":
                    captured["status"] = message["status"]
                    captured["headers"] = message.get("headers", [])
                elif message["type"] == "http.response.body":
                    captured["body"] += message.get("body", b"")
                await send(message)

            await self.app(scope, receive, capture)
            if captured["status"] < 500:
                await asyncio.to_thread(
                    self.store.put,
                    key,
                    StoredResponse(
                        scope["method"], scope["path"], captured["status"], captured["body"]
                    ),
                )

    @staticmethod
    async def _replay(stored: StoredResponse, scope: Scope, send: Send) -> None:
        if (stored.method, stored.path) != (scope["method"], scope["path"]):
            await send_problem(
                send,
                422,
                "idempotency.mismatch",
                f"Idempotency-Key reused: it was first used for {stored.method} {stored.path}",
            )
            return
        content_type = b"application/problem+json" if stored.status >= 400 else b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": stored.status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(stored.body)).encode()),
                    (b"idempotency-replayed", b"true"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": stored.body})
