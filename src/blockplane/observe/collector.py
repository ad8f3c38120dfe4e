"""Per-disk, per-group, per-job and reconcile series for ``/v1/metrics``, read at scrape time.

A custom Prometheus collector: each scrape makes at most one bulk stats call (through
``TopService``, so it also serves as a rate baseline for ``top``; an answer up to
``SCRAPE_STATS_AGE_S`` old, such as the last reconcile pass's, is used instead) and reads the
cached effective limits and IOThread counts. Thin volume series belong to the thin monitor and
are not repeated here. Observes only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blockplane.errors import BlockplaneError
from blockplane.hypervisor.bulk_stats import DiskSample
from blockplane.observe.reconcile import ReconcileLog
from blockplane.observe.top import TopService, running_jobs

log = logging.getLogger(__name__)

Family = CounterMetricFamily | GaugeMetricFamily
SCRAPE_STATS_AGE_S = 2.0
DISK = ["vm", "disk"]
_COUNTERS: tuple[tuple[str, str], ...] = (
    ("blockplane_disk_read_ops", "Read requests completed by the disk"),
    ("blockplane_disk_write_ops", "Write requests completed by the disk"),
    ("blockplane_disk_flush_ops", "Flush requests completed by the disk"),
    ("blockplane_disk_read_bytes", "Bytes read by the disk"),
    ("blockplane_disk_write_bytes", "Bytes written by the disk"),
    ("blockplane_disk_read_time_seconds", "Time spent on reads"),
    ("blockplane_disk_write_time_seconds", "Time spent on writes"),
)
_DIRECTIONS = ("total", "read", "write")


def _counter_values(disk: DiskSample) -> tuple[float, ...]:
    return (
        disk.read_ops,
        disk.write_ops,
        disk.flush_ops,
        disk.read_bytes,
        disk.write_bytes,
        disk.read_ns / 1e9,
        disk.write_ns / 1e9,
    )


class ObserveCollector(Collector):
    def __init__(self, top: TopService, reconcile: ReconcileLog) -> None:
        self._top = top
        self._reconcile = reconcile

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not make a bulk stats call.
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        by_name = {family.name: family for family in families}
        started = time.monotonic()
        self._top.expire_changed()
        try:
            sample = self._top.sample(max_age_s=SCRAPE_STATS_AGE_S)
        except BlockplaneError:
            log.exception("bulk stats for /v1/metrics failed")
            by_name["blockplane_metrics_stats_up"].add_metric([], 0)
        else:
            by_name["blockplane_metrics_stats_up"].add_metric([], 1)
            by_name["blockplane_metrics_stats_age_seconds"].add_metric(
                [], self._top.age_s(sample)
            )
            for vm, domain in sorted(sample.domains.items()):
                for disk in domain.disks:
                    for (name, _help), value in zip(_COUNTERS, _counter_values(disk), strict=True):
                        by_name[name].add_metric([vm, disk.target], value)
                    by_name["blockplane_disk_capacity_bytes"].add_metric(
                        [vm, disk.target], disk.capacity
                    )
                self._limits(vm, by_name)
        self._jobs(by_name)
        self._reconcile_series(by_name)
        by_name["blockplane_metrics_collect_duration_seconds"].add_metric(
            [], time.monotonic() - started
        )
        return iter(families)

    def _limits(self, vm: str, by_name: dict[str, Family]) -> None:
        limits = self._top.limits(vm)
        if limits is None:
            return
        by_name["blockplane_vm_iothreads"].add_metric([vm], limits.iothreads)
        for target, disk in limits.disks.items():
            for direction in _DIRECTIONS:
                iops = disk.effective.get(f"{direction}_iops_sec")
                if iops:
                    by_name["blockplane_disk_limit_iops"].add_metric([vm, target, direction], iops)
                rate = disk.effective.get(f"{direction}_bytes_sec")
                if rate:
                    by_name["blockplane_disk_limit_bytes_per_second"].add_metric(
                        [vm, target, direction], rate
                    )
        for group, group_limits in limits.groups.items():
            values = group_limits.to_dict()
            for direction in _DIRECTIONS:
                if values[f"{direction}_iops_sec"]:
                    by_name["blockplane_throttle_group_limit_iops"].add_metric(
                        [vm, group, direction], values[f"{direction}_iops_sec"]
                    )
                if values[f"{direction}_bytes_sec"]:
                    by_name["blockplane_throttle_group_limit_bytes_per_second"].add_metric(
                        [vm, group, direction], values[f"{direction}_bytes_sec"]
                    )

    def _jobs(self, by_name: dict[str, Family]) -> None:
        jobs = self._top.jobs
        if jobs is None:
            return
        try:
            listed = running_jobs(jobs)
        except BlockplaneError:
            log.exception("listing jobs for /v1/metrics failed")
            return
        for job in listed:
            current = job.progress.cur if job.progress else 0
            end = job.progress.end if job.progress else 0
            labels = [job.id, job.vm, job.target, job.kind]
            by_name["blockplane_job_processed_bytes"].add_metric(labels, current)
            by_name["blockplane_job_total_bytes"].add_metric(labels, end)
            by_name["blockplane_job_progress_ratio"].add_metric(
                labels, current / end if end else 0.0
            )

    def _reconcile_series(self, by_name: dict[str, Family]) -> None:
        by_name["blockplane_reconcile_passes"].add_metric([], self._reconcile.passes)
        last = self._reconcile.last
        if last is None:
            return
        by_name["blockplane_reconcile_last_duration_seconds"].add_metric([], last.duration_s)
        by_name["blockplane_reconcile_last_timestamp_seconds"].add_metric(
            [], last.started_at + last.duration_s
        )
        for step in last.steps:
            by_name["blockplane_reconcile_step_duration_seconds"].add_metric(
                [step.name], step.duration_s
            )
        counts = last.counts()
        for kind in ("iothread_plans", "thin_volumes"):
            if kind in counts:
                by_name["blockplane_reconcile_unconfirmed"].add_metric(
                    [kind], counts[kind] - counts.get(f"{kind}_confirmed", 0)
                )

    @staticmethod
    def _families() -> list[Family]:
        job = ["job", "vm", "disk", "kind"]
        families: list[Family] = [
            CounterMetricFamily(name, text, labels=DISK) for name, text in _COUNTERS
        ]
        families += [
            GaugeMetricFamily("blockplane_disk_capacity_bytes", "Virtual size of the disk",
                              labels=DISK),
            GaugeMetricFamily("blockplane_disk_limit_iops",
                              "Effective IOPS limit (tightest layer of the throttle chain)",
                              labels=[*DISK, "direction"]),
            GaugeMetricFamily("blockplane_disk_limit_bytes_per_second",
                              "Effective bandwidth limit (tightest layer of the throttle chain)",
                              labels=[*DISK, "direction"]),
            GaugeMetricFamily("blockplane_throttle_group_limit_iops",
                              "IOPS limit of a throttle group, shared by its disks",
                              labels=["vm", "group", "direction"]),
            GaugeMetricFamily("blockplane_throttle_group_limit_bytes_per_second",
                              "Bandwidth limit of a throttle group, shared by its disks",
                              labels=["vm", "group", "direction"]),
            GaugeMetricFamily("blockplane_vm_iothreads", "IOThreads of the running VM",
                              labels=["vm"]),
            GaugeMetricFamily("blockplane_job_processed_bytes", "Bytes a running job has done",
                              labels=job),
            GaugeMetricFamily("blockplane_job_total_bytes", "Bytes a running job has to do",
                              labels=job),
            GaugeMetricFamily("blockplane_job_progress_ratio", "Progress of a running job, 0..1",
                              labels=job),
            CounterMetricFamily("blockplane_reconcile_passes", "Reconcile passes run"),
            GaugeMetricFamily("blockplane_reconcile_last_duration_seconds",
                              "Duration of the latest reconcile pass"),
            GaugeMetricFamily("blockplane_reconcile_last_timestamp_seconds",
                              "When the latest reconcile pass finished (Unix time)"),
            GaugeMetricFamily("blockplane_reconcile_step_duration_seconds",
                              "Duration of each step of the latest reconcile pass",
                              labels=["step"]),
            GaugeMetricFamily("blockplane_reconcile_unconfirmed",
                              "Items the latest pass could not confirm against libvirt",
                              labels=["kind"]),
            GaugeMetricFamily("blockplane_metrics_stats_up",
                              "1 if this scrape's bulk stats call succeeded"),
            GaugeMetricFamily("blockplane_metrics_stats_age_seconds",
                              "Age of the bulk stats this scrape reports (reused up to "
                              f"{SCRAPE_STATS_AGE_S:.0f} s)"),
            GaugeMetricFamily("blockplane_metrics_collect_duration_seconds",
                              "Duration of this collector's work for the scrape"),
        ]
        return families
