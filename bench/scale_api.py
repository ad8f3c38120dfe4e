"""A persistent HTTP client of the agent for the scale bench, one connection per thread.

``AgentClient.request`` opens a connection and checks ``/v1/health`` before every call; a
management platform keeps its connection, so the bench does too and times only the request.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from blockplane.config import Settings, read_token


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class Api:
    def __init__(self, settings: Settings, timeout_s: float = 600.0) -> None:
        self.settings = settings
        self._timeout_s = timeout_s
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            token = read_token(self.settings.paths.token) or ""
            client = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.settings.paths.socket)),
                base_url="http://blockplane",
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout_s,
            )
            self._local.client = client
        return client

    def reset(self) -> None:
        """Drop this thread's connection (after the agent restarted)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is not None:
            client.close()
        self._local.client = None

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return self.timed(method, path, body, **params)[1]

    def timed(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[float, Any]:
        query = {key: value for key, value in params.items() if value is not None}
        started = time.perf_counter()
        response = self._client().request(method, path, json=body, params=query)
        seconds = time.perf_counter() - started
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail"))
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        if response.headers.get("content-type", "").startswith("application/json"):
            return seconds, response.json()
        return seconds, response.text
