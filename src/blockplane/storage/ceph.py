"""A client of a Ceph cluster's RBD pools, over the ``ceph`` and ``rbd`` command-line tools.

It owns the argument lists those tools are run with (never a shell), their timeouts, and the
parsing of their ``--format json`` answers into frozen dataclasses; ``ceph_errors`` says what
their failures mean (``ceph.unreachable``, ``ceph.auth``, ``ceph.pool_missing`` ...).

It must not decide policy (which pool, which names) and must never let a cephx key reach a
command line, a log or a message: the tools read the keyring file themselves. Debian's rados and
rbd Python bindings exist only for /usr/bin/python3, so the tools are the interface.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane import deadlines
from blockplane.errors import InvalidInput
from blockplane.storage.ceph_errors import (
    CephConfInvalid,
    CephError,
    CephSnapshotNotFound,
    CephUnreachable,
    classify_failure,
    redact,
)

LOG = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 10.0
LONG_TIMEOUT_S = 3600.0
# Past the tools' own timeouts, the time they get to report before they are killed.
KILL_MARGIN_S = 5.0
PROBE_PREFIX = "blockplane-access-probe-"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class CephAccess:
    """What a successful access check saw: the cluster answered and the user wrote to the pool."""

    pool: str
    user: str


@dataclass(frozen=True)
class ClusterUsage:
    """``ceph df``: None where the cluster reports no statistics (no active manager)."""

    total_bytes: int | None
    avail_bytes: int | None
    used_bytes: int | None


@dataclass(frozen=True)
class PoolDf:
    pool: str
    stored_bytes: int
    used_bytes: int
    max_avail_bytes: int
    objects: int


@dataclass(frozen=True)
class ImageUsage:
    name: str
    snapshot: str | None
    provisioned_bytes: int
    used_bytes: int


@dataclass(frozen=True)
class DiskUsage:
    """``rbd du``: per image (and snapshot) and in total."""

    images: tuple[ImageUsage, ...]
    provisioned_bytes: int
    used_bytes: int


@dataclass(frozen=True)
class PoolUsage:
    """A pool's capacity and usage.

    ``used_bytes`` is the cluster's own count where it reports one, else the images' ``rbd du``;
    ``max_avail_bytes`` and the cluster totals are None where the cluster reports no statistics
    (a cluster without an active manager, such as the lab's).
    """

    pool: str
    provisioned_bytes: int
    used_bytes: int
    max_avail_bytes: int | None
    cluster: ClusterUsage
    stats_reported: bool


@dataclass(frozen=True)
class RbdImageEntry:
    name: str
    image_id: str
    size_bytes: int


@dataclass(frozen=True)
class RbdImageInfo:
    name: str
    image_id: str
    size_bytes: int
    object_size_bytes: int
    features: tuple[str, ...]
    snapshot_count: int
    block_name_prefix: str


@dataclass(frozen=True)
class RbdSnapshot:
    snapshot_id: int
    name: str
    size_bytes: int
    protected: bool
    timestamp: str


# -- pure parts ------------------------------------------------------------------------------


def check_name(name: str, kind: str) -> str:
    """Pool, image, snapshot and user names: plain characters only, refused before any call."""
    if not _NAME.match(name):
        raise InvalidInput(
            f"invalid Ceph {kind} name {redact(name)!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter, digit or '_'",
            code="ceph.name_invalid",
        )
    return name


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CephError(f"unexpected answer from Ceph: {what} is {type(value).__name__}")
    return value


def _load(output: str, what: str) -> Any:
    try:
        return json.loads(output)
    except ValueError as error:
        raise CephError(f"unexpected answer from Ceph to {what}: not JSON") from error


def parse_df(output: str) -> tuple[ClusterUsage, dict[str, PoolDf]]:
    """``ceph df --format json``. A cluster with no manager reports zero totals and no pools."""
    document = _load(output, "ceph df")
    try:
        stats = document["stats"]
        total = _as_int(stats["total_bytes"], "total_bytes")
        pools = {
            str(entry["name"]): PoolDf(
                pool=str(entry["name"]),
                stored_bytes=_as_int(entry["stats"]["stored"], "stored"),
                used_bytes=_as_int(entry["stats"]["bytes_used"], "bytes_used"),
                max_avail_bytes=_as_int(entry["stats"]["max_avail"], "max_avail"),
                objects=_as_int(entry["stats"]["objects"], "objects"),
            )
            for entry in document.get("pools", [])
        }
        if total == 0 and not pools:
            return ClusterUsage(None, None, None), {}
        cluster = ClusterUsage(
            total_bytes=total,
            avail_bytes=_as_int(stats["total_avail_bytes"], "total_avail_bytes"),
            used_bytes=_as_int(stats["total_used_raw_bytes"], "total_used_raw_bytes"),
        )
    except (KeyError, TypeError) as error:
        raise CephError(f"unexpected answer from ceph df: missing {error}") from error
    return cluster, pools


def parse_du(output: str) -> DiskUsage:
    """``rbd du --format json``."""
    document = _load(output, "rbd du")
    try:
        images = tuple(
            ImageUsage(
                name=str(entry["name"]),
                snapshot=str(entry["snapshot"]) if "snapshot" in entry else None,
                provisioned_bytes=_as_int(entry["provisioned_size"], "provisioned_size"),
                used_bytes=_as_int(entry["used_size"], "used_size"),
            )
            for entry in document.get("images", [])
        )
        # One image's du has no totals; a pool's totals count the heads' provisioned sizes and
        # every row's use (a snapshot's own blocks included).
        provisioned = sum(row.provisioned_bytes for row in images if row.snapshot is None)
        used = sum(row.used_bytes for row in images)
        return DiskUsage(
            images=images,
            provisioned_bytes=_as_int(document.get("total_provisioned_size", provisioned), "total"),
            used_bytes=_as_int(document.get("total_used_size", used), "total"),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise CephError(f"unexpected answer from rbd du: missing {error}") from error


def parse_image_list(output: str) -> tuple[RbdImageEntry, ...]:
    """``rbd ls -l --format json``: images only (its snapshot rows are left out)."""
    document = _load(output, "rbd ls")
    try:
        return tuple(
            RbdImageEntry(str(entry["image"]), str(entry["id"]), _as_int(entry["size"], "size"))
            for entry in document
            if "snapshot" not in entry
        )
    except (KeyError, TypeError) as error:
        raise CephError(f"unexpected answer from rbd ls: missing {error}") from error


def parse_image_info(output: str) -> RbdImageInfo:
    """``rbd info --format json``."""
    document = _load(output, "rbd info")
    try:
        return RbdImageInfo(
            name=str(document["name"]),
            image_id=str(document["id"]),
            size_bytes=_as_int(document["size"], "size"),
            object_size_bytes=_as_int(document["object_size"], "object_size"),
            features=tuple(str(feature) for feature in document.get("features", [])),
            snapshot_count=_as_int(document.get("snapshot_count", 0), "snapshot_count"),
            block_name_prefix=str(document.get("block_name_prefix", "")),
        )
    except (KeyError, TypeError) as error:
        raise CephError(f"unexpected answer from rbd info: missing {error}") from error


def parse_snapshots(output: str) -> tuple[RbdSnapshot, ...]:
    """``rbd snap ls --format json``; ``protected`` comes as the string "true" or "false"."""
    document = _load(output, "rbd snap ls")
    try:
        return tuple(
            RbdSnapshot(
                snapshot_id=_as_int(entry["id"], "id"),
                name=str(entry["name"]),
                size_bytes=_as_int(entry["size"], "size"),
                protected=str(entry.get("protected", "false")).lower() == "true",
                timestamp=str(entry.get("timestamp", "")),
            )
            for entry in document
        )
    except (KeyError, TypeError) as error:
        raise CephError(f"unexpected answer from rbd snap ls: missing {error}") from error


# -- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CephConnection:
    """How to reach a cluster: its ceph.conf, the cephx user (without ``client.``) and keyring.

    Without a keyring the tools look where ceph.conf says (``keyring = ...``).
    """

    conf: Path
    user: str = "admin"
    keyring: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Removing, rolling back or shrinking touches every object of an image: such a command may
    # run long while each of its requests still answers within ``timeout_s``. Killing it half
    # way would leave the image half done, so it gets this much longer before it is killed.
    long_timeout_s: float = LONG_TIMEOUT_S

    def validate(self) -> None:
        check_name(self.user, "user")
        if not 0 < self.timeout_s <= self.long_timeout_s:
            raise InvalidInput("the Ceph timeouts must be positive", code="ceph.conf_invalid")
        for kind, path in (("ceph.conf", self.conf), ("keyring", self.keyring)):
            if path is not None and not os.access(path, os.R_OK):
                raise CephConfInvalid(f"the {kind} file {path} is missing or unreadable")

    def arguments(self, tool: str) -> list[str]:
        common = ["--conf", str(self.conf), "--id", self.user]
        if self.keyring is not None:
            common += ["--keyring", str(self.keyring)]
        seconds = f"{self.timeout_s:g}"
        if tool == "ceph":
            return ["ceph", *common, "--connect-timeout", seconds]
        return [
            tool,
            *common,
            "--client-mount-timeout",
            seconds,
            "--rados-mon-op-timeout",
            seconds,
            "--rados-osd-op-timeout",
            seconds,
        ]


class CephClient:
    """RBD pools and images on one cluster, as one cephx user."""

    def __init__(self, connection: CephConnection) -> None:
        connection.validate()
        self.connection = connection

    def run(
        self,
        tool: str,
        arguments: list[str],
        what: str,
        *,
        pool: str | None = None,
        long: bool = False,
    ) -> str:
        """Run a tool; ``long`` for commands that take as long as the image is big."""
        command = self.connection.arguments(tool) + arguments
        timeout_s = self.connection.timeout_s
        kill_after_s = self.connection.long_timeout_s if long else timeout_s + KILL_MARGIN_S
        if not long:  # a request waits no longer than its deadline (a long command may not be
            # killed half done, see ``long_timeout_s``)
            kill_after_s = deadlines.bounded(kill_after_s, "ceph.unreachable", what)
        LOG.debug("ceph: %s", " ".join(command))
        environment = {
            key: value for key, value in os.environ.items() if key not in ("CEPH_ARGS", "CEPH_CONF")
        }
        try:
            with deadlines.waiting_on(f"Ceph: {what}"):
                completed = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=kill_after_s,
                    check=False,
                    stdin=subprocess.DEVNULL,
                    env=environment,
                )
        except subprocess.TimeoutExpired as error:
            raise CephUnreachable(
                f"{what}: the cluster did not answer within {kill_after_s:g} s",
                timeout_s=kill_after_s,
            ) from error
        except OSError as error:
            raise CephError(
                f"{what}: {tool} could not run: {error}", code="ceph.tools_missing"
            ) from error
        if completed.returncode != 0:
            raise classify_failure(
                what, completed.returncode, completed.stderr, pool=pool, timeout_s=timeout_s
            )
        return completed.stdout

    def _rbd(self, arguments: list[str], what: str, pool: str, *, long: bool = False) -> str:
        return self.run("rbd", arguments, what, pool=pool, long=long)

    @staticmethod
    def _spec(pool: str, image: str) -> list[str]:
        return ["--pool", check_name(pool, "pool"), "--image", check_name(image, "image")]

    # -- pools

    def check_access(self, pool: str) -> CephAccess:
        """The cluster answers and the user may create and remove an image in ``pool``."""
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
        what = f"access check on pool {pool!r}"
        self._rbd(["create", *self._spec(pool, probe), "--size", "1M"], what, pool)
        self._rbd(["rm", "--no-progress", *self._spec(pool, probe)], what, pool)
        return CephAccess(pool=pool, user=self.connection.user)

    def fsid(self) -> str:
        """The cluster's fsid (a monitor read, allowed to ``profile rbd`` users)."""
        output = self.run("ceph", ["fsid", "--format", "json"], "reading the cluster's fsid")
        document = _load(output, "ceph fsid")
        fsid = document.get("fsid") if isinstance(document, dict) else None
        if not isinstance(fsid, str) or not re.fullmatch(r"[0-9a-fA-F-]{36}", fsid):
            raise CephError("unexpected answer from Ceph to ceph fsid")
        return fsid.lower()

    def df(self) -> tuple[ClusterUsage, dict[str, PoolDf]]:
        return parse_df(self.run("ceph", ["df", "--format", "json"], "ceph df"))

    def du(self, pool: str, image: str | None = None) -> DiskUsage:
        arguments = ["du", "--format", "json", "--pool", check_name(pool, "pool")]
        if image is not None:
            arguments += ["--image", check_name(image, "image")]
        # Without fast-diff, du reads every object's extent map: as long as a removal.
        return parse_du(self._rbd(arguments, f"rbd du on pool {pool!r}", pool, long=True))

    def pool_usage(self, pool: str) -> PoolUsage:
        usage = self.du(pool)
        cluster, pools = self.df()
        reported = pools.get(pool)
        if reported is None:
            return PoolUsage(pool, usage.provisioned_bytes, usage.used_bytes, None, cluster, False)
        return PoolUsage(
            pool=pool,
            provisioned_bytes=usage.provisioned_bytes,
            used_bytes=reported.stored_bytes,
            max_avail_bytes=reported.max_avail_bytes,
            cluster=cluster,
            stats_reported=True,
        )

    # -- images

    def list_images(self, pool: str) -> tuple[RbdImageEntry, ...]:
        what = f"listing pool {pool!r}"
        output = self._rbd(
            ["ls", "-l", "--format", "json", "--pool", check_name(pool, "pool")], what, pool
        )
        return parse_image_list(output)

    def image_info(self, pool: str, image: str) -> RbdImageInfo:
        output = self._rbd(
            ["info", "--format", "json", *self._spec(pool, image)], f"rbd info {pool}/{image}", pool
        )
        return parse_image_info(output)

    def create_image(self, pool: str, image: str, size_bytes: int) -> RbdImageInfo:
        """A raw RBD image (format 2, the cluster's default features) of ``size_bytes``."""
        _check_size(size_bytes)
        self._rbd(
            ["create", *self._spec(pool, image), "--size", f"{size_bytes}B"],
            f"creating {pool}/{image}",
            pool,
        )
        return self.image_info(pool, image)

    def remove_image(self, pool: str, image: str) -> None:
        arguments = ["rm", "--no-progress", *self._spec(pool, image)]
        self._rbd(arguments, f"removing {pool}/{image}", pool, long=True)

    def resize_image(
        self, pool: str, image: str, size_bytes: int, *, allow_shrink: bool = False
    ) -> RbdImageInfo:
        _check_size(size_bytes)
        arguments = ["resize", "--no-progress", *self._spec(pool, image), "--size"]
        arguments += [f"{size_bytes}B", *(["--allow-shrink"] if allow_shrink else [])]
        self._rbd(arguments, f"resizing {pool}/{image}", pool, long=allow_shrink)
        return self.image_info(pool, image)

    # -- snapshots

    def _snap_spec(self, pool: str, image: str, snapshot: str) -> list[str]:
        return [*self._spec(pool, image), "--snap", check_name(snapshot, "snapshot")]

    def create_snapshot(self, pool: str, image: str, snapshot: str) -> RbdSnapshot:
        self._rbd(
            ["snap", "create", "--no-progress", *self._snap_spec(pool, image, snapshot)],
            f"snapshot {pool}/{image}@{snapshot}",
            pool,
        )
        for existing in self.list_snapshots(pool, image):
            if existing.name == snapshot:
                return existing
        raise CephSnapshotNotFound(f"snapshot {pool}/{image}@{snapshot} vanished after creation")

    def list_snapshots(self, pool: str, image: str) -> tuple[RbdSnapshot, ...]:
        output = self._rbd(
            ["snap", "ls", "--format", "json", *self._spec(pool, image)],
            f"snapshots of {pool}/{image}",
            pool,
        )
        return parse_snapshots(output)

    def remove_snapshot(self, pool: str, image: str, snapshot: str) -> None:
        self._rbd(
            ["snap", "rm", "--no-progress", *self._snap_spec(pool, image, snapshot)],
            f"removing snapshot {pool}/{image}@{snapshot}",
            pool,
        )

    def purge_snapshots(self, pool: str, image: str) -> None:
        """Remove every snapshot of the image (``rbd rm`` refuses an image that has any)."""
        self._rbd(["snap", "purge", "--no-progress", *self._spec(pool, image)],
                  f"removing the snapshots of {pool}/{image}", pool, long=True)

    def rollback_snapshot(self, pool: str, image: str, snapshot: str) -> None:
        self._rbd(
            ["snap", "rollback", "--no-progress", *self._snap_spec(pool, image, snapshot)],
            f"rolling {pool}/{image} back to @{snapshot}",
            pool,
            long=True,
        )


def _check_size(size_bytes: int) -> None:
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes <= 0:
        raise InvalidInput(f"an RBD image size must be a positive number of bytes: {size_bytes!r}")
