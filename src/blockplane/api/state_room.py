"""Refuse changes while the state directory is (nearly) full, before anything is touched.

A change that cannot be recorded must not start: SQLite could fail half-way through it (a
record written without its event, an action taken and reported as failed), and an embedded
libvirt keeps its own state in the same home. So every mutating request is checked against the
free space of the store's filesystem first and refused with 503 ``state.disk_full``. Requests
that only read (guest exec, migrate-check) go on. Must not write anything itself.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request

from blockplane.api.middleware import MUTATING
from blockplane.store.database import ensure_room

#: POSTs that change no state.
READ_ONLY_SUFFIXES = ("/exec", "/migrate-check")


class StateRoomGuard:
    def __init__(self, state_directory: Path) -> None:
        self._directory = state_directory

    def __call__(self, request: Request) -> None:
        if request.method not in MUTATING or request.url.path.endswith(READ_ONLY_SUFFIXES):
            return
        ensure_room(self._directory)
