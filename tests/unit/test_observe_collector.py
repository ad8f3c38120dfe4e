"""The per-disk collector: one bulk stats call per scrape, Prometheus names, labels and values."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from blockplane.observe.collector import ObserveCollector
from blockplane.observe.reconcile import ReconcileLog
from blockplane.observe.top import TopService
from blockplane.runtime.eventlog import EventLog
from blockplane.store.database import Database
from blockplane.store.records import Records
from tests.unit.test_observe_top import FakeHost, FakeJobs


def scrape(tmp_path: Path) -> tuple[FakeHost, dict[str, dict[tuple[tuple[str, str], ...], float]]]:
    host = FakeHost()
    host.reads["a"] = 42
    records = Records(Database(tmp_path / "state.db"))
    reconcile = ReconcileLog()
    reconcile.run([lambda: {"iothread_plans": 4, "iothread_plans_confirmed": 3}])
    registry = CollectorRegistry()
    registry.register(ObserveCollector(TopService(host, records, EventLog(records), FakeJobs()),
                                       reconcile))
    assert host.bulk_calls == 0, "registering must not read stats"
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return host, samples


def test_one_scrape_is_one_bulk_stats_call_with_per_disk_series(tmp_path: Path) -> None:
    host, samples = scrape(tmp_path)
    assert host.bulk_calls == 1
    a = (("disk", "vda"), ("vm", "a"))
    assert samples["blockplane_disk_read_ops_total"][a] == 42
    assert samples["blockplane_disk_read_bytes_total"][a] == 42 * 4096
    assert samples["blockplane_disk_capacity_bytes"][a] == 64 << 20
    limit = (("direction", "total"), ("disk", "vda"), ("vm", "a"))
    assert samples["blockplane_disk_limit_iops"][limit] == 500
    assert samples["blockplane_throttle_group_limit_iops"][
        (("direction", "total"), ("group", "g"), ("vm", "a"))] == 500
    assert samples["blockplane_vm_iothreads"][(("vm", "a"),)] == 2
    assert samples["blockplane_metrics_stats_up"][()] == 1


def test_jobs_and_reconcile_series(tmp_path: Path) -> None:
    _host, samples = scrape(tmp_path)
    job = (("disk", "vda"), ("job", "j1"), ("kind", "commit"), ("vm", "b"))
    assert samples["blockplane_job_progress_ratio"] == {job: 0.25}
    assert samples["blockplane_job_processed_bytes"][job] == 25
    assert samples["blockplane_reconcile_passes_total"][()] == 1
    assert samples["blockplane_reconcile_unconfirmed"][(("kind", "iothread_plans"),)] == 1
    assert "blockplane_reconcile_last_duration_seconds" in samples


def test_names_follow_prometheus_conventions(tmp_path: Path) -> None:
    _host, samples = scrape(tmp_path)
    for name in samples:
        assert name.startswith("blockplane_"), name
        if "bytes" in name:
            assert name.endswith(("_bytes", "_bytes_total", "_bytes_per_second")), name
        if "seconds" in name or "time" in name:
            assert name.endswith(("_seconds", "_seconds_total")), name
    counters = [name for name in samples if name.endswith("_total")]
    assert "blockplane_disk_write_ops_total" in counters
    assert "blockplane_disk_write_time_seconds_total" in counters
