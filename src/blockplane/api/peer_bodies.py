"""Request and response bodies of the peer routes (pydantic, at the edge).

A peer's token goes in (``PeerAdd.token``) and never comes out: every answer says only
``"token": "set"``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from blockplane.api.schemas import Body
from blockplane.migration.peer_address import MAX_CA_BYTES, MAX_TOKEN_LENGTH, MAX_URL_LENGTH
from blockplane.migration.peers import PeerStatus, PeerView


class PeerAdd(Body):
    """``POST /v1/peers``: the peer is contacted (``GET /v1/facts``) before it is recorded."""

    name: str = Field(max_length=64)
    api: str = Field(max_length=MAX_URL_LENGTH, description="https://HOST:PORT of its agent")
    token: str = Field(
        max_length=MAX_TOKEN_LENGTH, description="The peer's bearer token; never shown again"
    )
    ca_pem: str | None = Field(
        default=None,
        max_length=MAX_CA_BYTES,
        description="PEM of the CA that signed the peer's certificate (pinned); "
        "without it the system's CAs are trusted",
    )


class PeerOut(BaseModel):
    name: str
    api: str
    token: Literal["set"] = "set"
    ca_fingerprints: list[str]
    added_at: float
    hostname: str | None = Field(description="The peer's host name when it was added")
    version: str | None = Field(description="The peer's blockplane version when it was added")

    @classmethod
    def of(cls, view: PeerView) -> PeerOut:
        return cls(
            name=view.name,
            api=view.api,
            ca_fingerprints=list(view.ca_fingerprints),
            added_at=view.added_at,
            hostname=view.hostname,
            version=view.version,
        )


class PeerNowOut(BaseModel):
    answers: bool
    code: str | None = Field(description="Why not: peer.auth, peer.tls, peer.unreachable ...")
    detail: str | None
    version: str | None
    hostname: str | None


class PeerShowOut(PeerOut):
    now: PeerNowOut

    @classmethod
    def of_status(cls, status: PeerStatus) -> PeerShowOut:
        now = status.now
        return cls(
            **PeerOut.of(status.peer).model_dump(),
            now=PeerNowOut(
                answers=now.answers,
                code=now.code,
                detail=now.detail,
                version=now.version,
                hostname=now.hostname,
            ),
        )
