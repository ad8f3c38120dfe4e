"""Is a pool the same storage on two hosts? A migration does not copy a disk that is.

Each host tells the identity of its pool; equal identities mean the same bytes, so the disk
stays where it is and only the VM moves. Where the identity comes from:
- a backend that knows it is shared says so: ``shared = True`` and ``shared_identity`` (a str
  naming the cluster and pool, e.g. an rbd pool's ``ceph:<fsid>/<pool>``); this is the hook the
  rbd backend plugs into;
- a ``dir`` pool may sit on a filesystem several hosts mount (NFS, or the lab's shared
  directory): its identity is a random id kept in a marker file at its root, made once by the
  first host that asks; a host that mounts the same directory reads the same id;
- every other pool (loop, lvm: devices of one host) has none, and is never shared.

Owns the marker file (``.blockplane-pool-id``, which no volume name can take: volume names do
not start with a dot). Must not decide what is copied (``migration.source``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from blockplane.store.records import PoolRecord

MARKER = ".blockplane-pool-id"


def backend_identity(backend: Any) -> str | None:
    """The identity a shared backend declares, or None (this one is not known to be shared)."""
    if not getattr(backend, "shared", False):
        return None
    identity = getattr(backend, "shared_identity", None)
    return str(identity) if identity else None


def pool_identity(pool: PoolRecord, backend: Any, *, make: bool) -> str | None:
    """``pool``'s shared-storage identity; ``make``: create a dir pool's marker if missing
    (the source does, so that a destination mounting the same directory finds it)."""
    declared = backend_identity(backend)
    if declared is not None:
        return declared
    if pool.type != "dir":
        return None
    return _marker_identity(Path(pool.path), make=make)


def _marker_identity(root: Path, *, make: bool) -> str | None:
    marker = root / MARKER
    try:
        return _read(marker)
    except FileNotFoundError:
        if not make:
            return None
    candidate = f"dir:{uuid.uuid4()}"
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return _read(marker)  # another host (or request) made it first: theirs holds
    except OSError:
        return None
    with os.fdopen(fd, "w") as handle:
        handle.write(candidate + "\n")
    return candidate


def _read(marker: Path) -> str | None:
    try:
        text = marker.read_text().strip()
    except FileNotFoundError:
        raise
    except OSError:
        return None
    return text if text.startswith("dir:") and len(text) < 128 else None
