"""What the ``ceph`` and ``rbd`` tools' failures mean, as blockplane errors with stable codes.

    ceph.unreachable   no monitor answered within the timeout (OperationFailed, 503, exit 1)
    ceph.auth          the user, its keyring or its caps were refused (403, exit 2)
    ceph.pool_missing  the RADOS pool does not exist (NotFound, exit 2)
    ceph.conf_invalid  the ceph.conf or keyring file is missing or unreadable (InvalidInput)
    ceph.image_not_found, ceph.snapshot_not_found (NotFound); ceph.image_exists,
    ceph.image_busy (Conflict); ceph.failed (anything else the tools refused, or an answer
    that could not be read)

Both tools exit with the errno of the failure (``rbd``) or print it (``(13) Permission denied``,
``[errno 13]``); the text decides between the cases that share one. Every message built from
their output is scrubbed of anything shaped like a cephx key. Pure functions only: it runs
nothing.
"""

from __future__ import annotations

import re

from blockplane.errors import BlockplaneError, Conflict, InvalidInput, NotFound, OperationFailed

MESSAGE_CHARS = 600
# A cephx secret: base64 of 28 bytes (type, creation time, length, 16 secret bytes).
_KEY_SHAPE = re.compile(r"AQ[A-Za-z0-9+/]{36}==")
_ERRNO = re.compile(r"(?:\(|\[errno )(\d+)[)\]] [A-Za-z]")


class CephError(OperationFailed):
    code = "ceph.failed"
    title = "Ceph operation failed"


class CephUnreachable(OperationFailed):
    code = "ceph.unreachable"
    http_status = 503
    title = "Ceph cluster unreachable"


class CephAuthFailed(BlockplaneError):
    code = "ceph.auth"
    http_status = 403
    title = "Ceph refused the user"


class CephPoolMissing(NotFound):
    code = "ceph.pool_missing"
    title = "Ceph pool missing"


class CephConfInvalid(InvalidInput):
    code = "ceph.conf_invalid"
    title = "Ceph configuration invalid"


class CephImageNotFound(NotFound):
    code = "ceph.image_not_found"
    title = "RBD image not found"


class CephSnapshotNotFound(NotFound):
    code = "ceph.snapshot_not_found"
    title = "RBD snapshot not found"


class CephImageExists(Conflict):
    code = "ceph.image_exists"
    title = "RBD image exists"


class CephImageBusy(Conflict):
    code = "ceph.image_busy"
    title = "RBD image busy"


def redact(text: str) -> str:
    return _KEY_SHAPE.sub("<key redacted>", text)


def classify_failure(
    what: str, returncode: int, stderr: str, *, pool: str | None = None, timeout_s: float = 0.0
) -> BlockplaneError:
    """The blockplane error for a ``ceph``/``rbd`` run that exited ``returncode``.

    Both tools exit with the errno of the failure (``rbd``) or print it (``(13) Permission
    denied``, ``[errno 13]``); the text decides between the cases that share one.
    """
    text = redact(stderr)
    lowered = text.lower()
    excerpt = _excerpt(text)
    # The tool's own last line carries the operation's errno; librados' log lines come before.
    found = _ERRNO.findall(text)
    errno = int(found[-1]) if found else returncode
    connecting = "couldn't connect to the cluster" in lowered or (
        "error connecting to the cluster" in lowered
    )
    auth_words = (
        "permission denied",
        "operation not permitted",
        "handle_auth_bad_method",
        "unable to find a keyring",
        "permission error",
    )
    timed_out = errno == 110 or "timed out" in lowered
    if (
        connecting
        and not timed_out
        and (errno in (1, 2, 13) or any(word in lowered for word in auth_words))
    ):
        return CephAuthFailed(f"{what}: the cluster refused the user: {excerpt}")
    if connecting or timed_out:
        return CephUnreachable(
            f"{what}: no Ceph monitor answered within {timeout_s:g} s: {excerpt}",
            timeout_s=timeout_s,
        )
    if errno in (1, 13) or "permission denied" in lowered or "not permitted" in lowered:
        where = f" on pool {pool!r}" if pool else ""
        return CephAuthFailed(f"{what}: the user lacks the caps{where}: {excerpt}")
    if (
        "error opening pool" in lowered
        or "unrecognized pool" in lowered
        or ("pool" in lowered and "does not exist" in lowered)
    ):
        return CephPoolMissing(f"{what}: pool {pool!r} does not exist", pool=pool)
    if errno == 2 and ("snap" in lowered or "snapshot" in lowered):
        return CephSnapshotNotFound(f"{what}: no such snapshot: {excerpt}")
    if errno == 2:
        return CephImageNotFound(f"{what}: no such image: {excerpt}")
    if errno == 17:
        return CephImageExists(f"{what}: the image exists: {excerpt}")
    if errno in (16, 39):
        return CephImageBusy(f"{what}: {excerpt}")
    return CephError(f"{what} failed ({returncode}): {excerpt}")


def _excerpt(text: str) -> str:
    """The lines a person acts on: the tool's own, without librados' timestamped log lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    plain = [line for line in lines if not re.match(r"^\d{4}-\d\d-\d\dT", line)]
    chosen = " / ".join(plain or lines)
    return chosen[-MESSAGE_CHARS:] if chosen else "(no message)"
