"""Peer routes: ``/v1/peers`` (list, add) and ``/v1/peers/{name}`` (show, remove).

Handlers translate between JSON and ``PeerService``; they hold no policy.
"""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.peer_bodies import PeerAdd, PeerOut, PeerShowOut
from blockplane.migration.peers import PeerService


def peers_router(peers: PeerService) -> APIRouter:
    router = APIRouter()

    @router.get("/peers")
    def list_peers() -> list[PeerOut]:
        return [PeerOut.of(view) for view in peers.list()]

    @router.post("/peers", status_code=201)
    def add_peer(body: PeerAdd) -> PeerOut:
        """Contact the peer over HTTPS (pinned CA, its token) and record it only if it
        answered correctly. 400 ``peer.auth`` (token refused), ``peer.tls`` (certificate not
        trusted), ``peer.insecure`` (http://), ``peer.invalid``; 409 ``peer.exists``; 502
        ``peer.unreachable``. Nothing is recorded on any refusal."""
        return PeerOut.of(peers.add(body.name, body.api, body.token, body.ca_pem))

    @router.get("/peers/{name}")
    def show_peer(name: str) -> PeerShowOut:
        """The peer, and whether it answers now (within a few seconds)."""
        return PeerShowOut.of_status(peers.show(name))

    @router.delete("/peers/{name}")
    def remove_peer(name: str) -> PeerOut:
        return PeerOut.of(peers.remove(name))

    return router
