"""Peers: the other hosts' agents this agent trusts, and what they answer now.

Owns adding (only after the peer answered ``GET /v1/facts`` correctly over the pinned TLS
channel with its token), listing, showing and removing peers, and fetching a peer's live facts.
A peer's token is stored but never returned, logged or put into an event; views say only that
one is set. Must not talk to the hypervisor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from blockplane.errors import BlockplaneError, Conflict, NotFound
from blockplane.migration.peer_address import (
    certificates_in,
    fingerprint,
    parse_peer_url,
    validate_peer_name,
    validate_token,
)
from blockplane.migration.peer_client import DEFAULT_TIMEOUT_S, PeerClient, PeerFacts
from blockplane.migration.peer_store import PeerRecord, PeerStore
from blockplane.store.events import EventPublisher

#: ``peer show`` asks the peer whether it answers now; a down peer must not hold the CLI long.
PROBE_TIMEOUT_S = 3.0

ClientFactory = Callable[[PeerRecord, float], PeerClient]


@dataclass(frozen=True)
class PeerView:
    """A peer as shown: where it is, which CA is pinned, and that a token is set (not which)."""

    name: str
    api: str
    ca_fingerprints: tuple[str, ...]
    added_at: float
    hostname: str | None
    version: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "api": self.api,
            "token": "set",
            "ca_fingerprints": list(self.ca_fingerprints),
            "added_at": self.added_at,
            "hostname": self.hostname,
            "version": self.version,
        }


@dataclass(frozen=True)
class PeerNow:
    """Whether the peer answers now: its version and host name, or the code of the failure."""

    answers: bool
    code: str | None
    detail: str | None
    version: str | None
    hostname: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "code": self.code,
            "detail": self.detail,
            "version": self.version,
            "hostname": self.hostname,
        }


@dataclass(frozen=True)
class PeerStatus:
    peer: PeerView
    now: PeerNow

    def to_json(self) -> dict[str, Any]:
        return {**self.peer.to_json(), "now": self.now.to_json()}


def client_for(record: PeerRecord, timeout_s: float) -> PeerClient:
    return PeerClient(
        record.name, parse_peer_url(record.api), record.token, record.ca_pem, timeout_s
    )


class PeerService:
    def __init__(
        self, store: PeerStore, events: EventPublisher, clients: ClientFactory = client_for
    ) -> None:
        self._store = store
        self._events = events
        self._clients = clients
        self._kept: dict[str, tuple[tuple[str, str, str, str | None], PeerClient]] = {}
        self._kept_lock = threading.Lock()

    def add(self, name: str, api: str, token: str, ca_pem: str | None) -> PeerView:
        """Record a peer once it answered correctly; on any refusal nothing is recorded."""
        validate_peer_name(name)
        address = parse_peer_url(api)
        validate_token(token)
        if ca_pem is not None:
            certificates_in(ca_pem)
        if self._store.get(name) is not None:
            raise Conflict(f"a peer named {name!r} already exists", code="peer.exists")
        candidate = PeerRecord(name, address.url, token, ca_pem, 0.0, None, None)
        facts = self._clients(candidate, DEFAULT_TIMEOUT_S).facts_once()
        about = facts.agent
        record = self._store.add(
            name, address.url, token, ca_pem, about.hostname, about.version
        )
        self._events.publish("peer.added", None, peer=name, api=address.url)
        return _view(record)

    def list(self) -> list[PeerView]:
        return [_view(record) for record in self._store.all()]

    def show(self, name: str, timeout_s: float = PROBE_TIMEOUT_S) -> PeerStatus:
        record = self._record(name)
        try:
            about = self._clients(record, timeout_s).facts_once().agent
        except BlockplaneError as error:
            now = PeerNow(False, error.code, error.message, None, None)
        else:
            now = PeerNow(True, None, None, about.version, about.hostname)
        return PeerStatus(_view(record), now)

    def remove(self, name: str) -> PeerView:
        record = self._record(name)
        if not self._store.remove(name):
            raise NotFound(f"no peer named {name!r}", code="peer.not_found")
        self._events.publish("peer.removed", None, peer=name, api=record.api)
        return _view(record)

    def live_facts(self, name: str) -> Mapping[str, Any]:
        """The peer's ``facts`` document as it is now (for ``vm migrate-check --to``)."""
        facts: PeerFacts = self._clients(
            self._record(name), DEFAULT_TIMEOUT_S
        ).facts_once()
        return facts.document

    def client(self, name: str) -> PeerClient:
        """The client of peer ``name`` (``peer.not_found`` if there is none), kept while the
        peer's record stays the same, so its connections are reused; calls give their own
        timeout."""
        record = self._record(name)
        key = (record.name, record.api, record.token, record.ca_pem)
        with self._kept_lock:
            kept = self._kept.get(name)
            if kept is None or kept[0] != key:
                kept = (key, self._clients(record, DEFAULT_TIMEOUT_S))
                self._kept[name] = kept
            return kept[1]

    def _record(self, name: str) -> PeerRecord:
        validate_peer_name(name)
        record = self._store.get(name)
        if record is None:
            raise NotFound(f"no peer named {name!r}", code="peer.not_found")
        return record


def _view(record: PeerRecord) -> PeerView:
    fingerprints = (
        tuple(fingerprint(der) for der in certificates_in(record.ca_pem))
        if record.ca_pem is not None
        else ()
    )
    return PeerView(
        name=record.name,
        api=record.api,
        ca_fingerprints=fingerprints,
        added_at=record.added_at,
        hostname=record.hostname,
        version=record.version,
    )
