"""The agent's Prometheus metrics, on a registry of its own (not the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.api_latency = Histogram(
            "blockplane_api_request_duration_seconds",
            "HTTP API request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.hypervisor_events = Counter(
            "blockplane_hypervisor_events_total",
            "Hypervisor events received",
            ["kind"],
            registry=self.registry,
        )
        self.event_lag = Histogram(
            "blockplane_event_lag_seconds",
            "Time from libvirt's callback to the agent's handler",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.reconcile_duration = Histogram(
            "blockplane_reconcile_duration_seconds",
            "Duration of one reconcile pass",
            registry=self.registry,
        )
        self.vms = Gauge("blockplane_vms", "VMs managed by blockplane", registry=self.registry)
        # Thin provisioning (blockplane.thin.monitor).
        self.thin_extend_latency = Histogram(
            "blockplane_thin_extend_latency_seconds",
            "Thin volume extend latency, from the event (or decision) to the re-armed threshold",
            ["cause"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.thin_extends = Counter(
            "blockplane_thin_extends", "Thin volume extends", ["cause"], registry=self.registry
        )
        self.thin_pauses = Counter(
            "blockplane_thin_pauses", "VM pauses on ENOSPC of a thin volume", registry=self.registry
        )
        self.thin_extend_refusals = Counter(
            "blockplane_thin_extend_refusals",
            "Thin extends refused because the pool would pass its capacity",
            registry=self.registry,
        )
        self.thin_missed_events = Counter(
            "blockplane_thin_missed_events",
            "Threshold crossings no event reported, found by reconcile",
            registry=self.registry,
        )
        thin_labels = ["vm", "disk", "volume"]
        self.thin_physical_bytes = Gauge(
            "blockplane_thin_physical_bytes", "Thin volume physical size", thin_labels,
            registry=self.registry,
        )
        self.thin_allocation_bytes = Gauge(
            "blockplane_thin_allocation_bytes", "Highest offset QEMU wrote in the thin volume",
            thin_labels, registry=self.registry,
        )
        self.thin_threshold_bytes = Gauge(
            "blockplane_thin_threshold_bytes", "Write threshold armed on the thin volume (0: none)",
            thin_labels, registry=self.registry,
        )

        # Ceph rbd pools (blockplane.storage.ceph_health): the background probe's verdict.
        self.ceph_pool_healthy = Gauge(
            "blockplane_ceph_pool_healthy",
            "1 while the rbd pool's cluster answers the probe (monitor and OSDs), 0 when not",
            ["pool"], registry=self.registry,
        )
        self.ceph_probe_seconds = Gauge(
            "blockplane_ceph_probe_seconds", "How long the last probe of the rbd pool took",
            ["pool"], registry=self.registry,
        )
        self.ceph_unhealthy_seconds = Gauge(
            "blockplane_ceph_pool_unhealthy_seconds",
            "For how long the rbd pool's cluster has not answered (0 while it answers)",
            ["pool"], registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
