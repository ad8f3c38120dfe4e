"""The HTTPS client of one peer agent: the pinned CA, the peer's bearer token, short timeouts.

Owns the calls an agent makes to another agent and the mapping of every way they fail to one
error code (``peer_errors``): a refused token, an untrusted certificate, no answer. Must not
log or put the token into any message, and must not follow redirects or read proxy settings
from the environment (a peer is reached directly, or not at all).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from blockplane.errors import BlockplaneError
from blockplane.migration.peer_address import PeerAddress, pinned_context
from blockplane.migration.peer_errors import (
    PeerAuthRefused,
    PeerBadAnswer,
    PeerTLSFailed,
    PeerUnreachable,
)

DEFAULT_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024
FACTS_KEYS = ("qemu", "libvirt", "capabilities")


@dataclass(frozen=True)
class PeerAgent:
    """What a peer says about itself in its facts: its blockplane version and host name."""

    version: str | None
    hostname: str | None


@dataclass(frozen=True)
class PeerFacts:
    """A peer's live ``GET /v1/facts`` document, checked to look like one."""

    document: Mapping[str, Any]

    @property
    def agent(self) -> PeerAgent:
        about = self.document.get("agent")
        if not isinstance(about, Mapping):
            return PeerAgent(None, None)
        version, hostname = about.get("version"), about.get("hostname")
        return PeerAgent(
            version if isinstance(version, str) else None,
            hostname if isinstance(hostname, str) else None,
        )


class PeerClient:
    def __init__(
        self,
        name: str,
        address: PeerAddress,
        token: str,
        ca_pem: str | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.address = address
        self._token = token
        self._context = pinned_context(ca_pem)
        self._timeout_s = timeout_s
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    def __repr__(self) -> str:  # no token, ever
        return f"PeerClient({self.name!r}, {self.address.url!r})"

    def facts(self) -> PeerFacts:
        return PeerFacts(facts_document(self.name, self._get("/v1/facts")))

    def facts_once(self) -> PeerFacts:
        """``facts`` on a client used for nothing else (its connection is closed after)."""
        try:
            return self.facts()
        finally:
            self.close()

    def _get(self, path: str) -> Any:
        return self.call("GET", path)

    def connection(self) -> httpx.Client:
        """One HTTPS client per peer, kept: its connections (and TLS sessions) are reused."""
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(
                    base_url=self.address.url,
                    verify=self._context,
                    headers={"Authorization": f"Bearer {self._token}"},
                    timeout=self._timeout_s,
                    trust_env=False,
                    follow_redirects=False,
                )
            return self._http

    def close(self) -> None:
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def call(self, method: str, path: str, body: Any = None,
             params: Mapping[str, str] | None = None, timeout_s: float | None = None) -> Any:
        """One request to the peer's API; its JSON answer. A refusal the peer explains
        (problem+json) comes back as ``PeerRefused`` with the peer's own code and status."""
        timeout = timeout_s if timeout_s is not None else self._timeout_s
        try:
            with self.connection().stream(method, path, json=body, params=params,
                                          timeout=timeout) as response:
                answer = _read_capped(response)
                status = response.status_code
        except httpx.TransportError as error:
            raise transport_failure(self.name, self.address.url, error) from None
        if status >= 400 and status != 401:
            refused = _problem(self.name, status, answer)
            if refused is not None:
                raise refused
        failure = answer_failure(self.name, self.address.url, status, path)
        if failure is not None:
            raise failure
        try:
            return json.loads(answer) if answer else None
        except ValueError:
            raise PeerBadAnswer(
                f"peer {self.name!r} ({self.address.url}) answered {path} with something "
                "that is not JSON",
                peer=self.name,
            ) from None


class PeerRefused(BlockplaneError):
    """The peer refused a request and said why: its code and HTTP status, as it gave them."""

    def __init__(self, message: str, *, code: str, status: int, peer: str) -> None:
        super().__init__(message, code=code, peer=peer)
        self.http_status = status
        self.title = "Refused by the peer"


def _problem(name: str, status: int, answer: bytes) -> PeerRefused | None:
    try:
        problem = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(problem, Mapping) or not isinstance(problem.get("code"), str):
        return None
    code = str(problem["code"])[:64]
    detail = str(problem.get("detail") or problem.get("title") or code)[:2000]
    return PeerRefused(f"peer {name}: {detail}", code=code, status=status, peer=name)


def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise PeerBadAnswer(
                f"the peer's answer is over {MAX_ANSWER_BYTES} bytes; it is not a blockplane "
                "agent's"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def transport_failure(name: str, url: str, error: BaseException) -> BlockplaneError:
    """``peer.tls`` when TLS failed (untrusted certificate, wrong name, not TLS at all),
    ``peer.unreachable`` for everything else that kept an answer from arriving."""
    tls = _tls_cause(error)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or tls
        return PeerTLSFailed(
            f"peer {name!r} ({url}): TLS failed ({reason}); check that --ca-file is the CA "
            "that signed the peer's certificate, that the certificate names the host in the "
            "URL, and that the peer's agent serves HTTPS there; nothing was changed",
            peer=name,
        )
    if isinstance(error, httpx.TimeoutException):
        why = "it did not answer in time"
    else:
        why = str(error) or type(error).__name__
    return PeerUnreachable(
        f"peer {name!r} ({url}) is unreachable: {why}; nothing was changed", peer=name
    )


def _tls_cause(error: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def answer_failure(name: str, url: str, status: int, path: str) -> BlockplaneError | None:
    """The error an HTTP status from a peer stands for; ``None`` for success."""
    if 200 <= status < 300:
        return None
    if status == 401:
        return PeerAuthRefused(
            f"peer {name!r} ({url}) refused the token; give the contents of the peer's "
            "$BLOCKPLANE_HOME/token; nothing was changed",
            peer=name,
        )
    return PeerBadAnswer(
        f"peer {name!r} ({url}) answered {path} with HTTP {status}", peer=name, status=status
    )


def facts_document(name: str, document: object) -> Mapping[str, Any]:
    """A facts answer must look like one before anything is recorded or compared."""
    if (
        not isinstance(document, Mapping)
        or any(not isinstance(document.get(key), Mapping) for key in FACTS_KEYS)
        or not isinstance(document.get("cpus"), int)
    ):
        raise PeerBadAnswer(
            f"peer {name!r} answered /v1/facts with something that is not a blockplane "
            "facts document",
            peer=name,
        )
    return document
