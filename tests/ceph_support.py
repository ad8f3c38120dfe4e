"""The one-node Ceph cluster the suite shares: one per test session (per xdist worker).

Use the ``ceph_cluster`` fixture; ``requires_ceph`` skips a test only where the Ceph daemons and
tools are not installed. Import the fixture into ``tests/conftest.py`` to share it suite-wide; a
module that imports it itself still shares the same cluster (it is counted, started once and
stopped after its last user).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockplane.lab.ceph import CephCluster, CephUser, missing_binaries, start_cluster

CEPH_MISSING = missing_binaries()
SKIP_REASON = (
    f"Ceph is not installed here (missing: {', '.join(CEPH_MISSING)}); "
    "`make setup` installs ceph-mon, ceph-osd, ceph-common and qemu-block-extra"
)
requires_ceph = pytest.mark.skipif(bool(CEPH_MISSING), reason=SKIP_REASON)


class _SharedCluster:
    def __init__(self) -> None:
        self.cluster: CephCluster | None = None
        self.users = 0

    def acquire(self) -> CephCluster:
        if self.cluster is None:
            # Short path under /tmp: admin socket paths are limited to 108 bytes.
            workdir = Path(tempfile.mkdtemp(prefix="bp-ceph-", dir="/tmp"))
            try:
                self.cluster = start_cluster(workdir)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        self.users += 1
        return self.cluster

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.cluster is not None:
            workdir = self.cluster.workdir
            self.cluster.stop()
            self.cluster = None
            shutil.rmtree(workdir, ignore_errors=True)


_SHARED = _SharedCluster()


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[CephCluster]:
    """A running cluster with an initialised ``rbd`` pool; client.admin is in its keyring."""
    if CEPH_MISSING:
        pytest.skip(SKIP_REASON)
    cluster = _SHARED.acquire()
    try:
        yield cluster
    finally:
        _SHARED.release()


def rbd_user(cluster: CephCluster, name: str, pools: tuple[str, ...] = ("rbd",)) -> CephUser:
    """A cephx user with ``profile rbd`` on ``pools`` (created once, then the same key)."""
    return cluster.create_user(name, pools=pools)
