"""The Ceph health probe's verdicts, kept in memory for facts, pool show and metrics."""

from __future__ import annotations

from pathlib import Path

from blockplane.model.ceph import CephHealth, Monitor
from blockplane.storage.ceph_health import CephHealthMonitor
from blockplane.store.rbd_pools import RbdPoolRecord


def record(tmp_path: Path, name: str = "ceph") -> RbdPoolRecord:
    return RbdPoolRecord(name, tmp_path / "missing.conf", "web", tmp_path / "missing.keyring",
                         "vms", "b6638092-6af5-45fc-8dc4-6f0cb6a27b45",
                         "829de51d-3c2e-50ac-b0c9-16bce36ec690", (Monitor("10.0.0.1", 3300),))


def test_a_pool_not_probed_yet_says_so(tmp_path: Path) -> None:
    monitor = CephHealthMonitor(lambda: [record(tmp_path)])
    health = monitor.health("ceph")
    assert health.healthy is None and health.reason == "not probed yet"


def test_a_failed_probe_is_unhealthy_with_its_code_and_keeps_when_it_began(
    tmp_path: Path,
) -> None:
    seen: list[CephHealth] = []
    monitor = CephHealthMonitor(lambda: [record(tmp_path)], listeners=[seen.append])
    [first] = monitor.probe_all()
    assert first.healthy is False and first.code == "ceph.conf_invalid"
    assert first.unhealthy_since is not None and first.checked_at is not None
    [second] = monitor.probe_all()
    assert second.unhealthy_since == first.unhealthy_since
    assert seen == [first, second]
    assert [h.pool for h in monitor.all()] == ["ceph"]


def test_a_deleted_pool_is_forgotten(tmp_path: Path) -> None:
    pools = [record(tmp_path)]
    monitor = CephHealthMonitor(lambda: list(pools))
    monitor.probe_all()
    pools.clear()
    assert monitor.probe_all() == [] and monitor.all() == []
    assert monitor.health("ceph").healthy is None
