"""``/v1/metrics`` after some activity: per-disk counters and limits, API latency by route,
reconcile and event series; ``/v1/reconcile`` and ``blockplane top`` on the same VM.

The disk is attached before the VM starts, so the firmware reads it at boot: its read counter
is above zero without a guest OS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration

VM = "metr"
Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def disk(agent: AgentUnderTest) -> Iterator[str]:
    agent.ok("pool", "create", "mp", "--type", "loop", "--chunk", "4M")
    agent.ok("vm", "create", VM, "--vcpus", "1", "--memory", "64M")
    agent.ok("throttle", "set", VM, "vmgrp", "--total-iops-sec", "2000")
    attached = agent.json(
        "disk", "attach", VM, "--pool", "mp", "--size", "64M", "--thin", "--queues", "2",
        "--io-threads", "2", "--total-iops-sec", "500", "--throttle-groups", "vmgrp",
    )
    agent.ok("vm", "start", VM)
    yield str(attached["target"])


def scrape(agent: AgentUnderTest) -> Samples:
    with agent.http() as client:
        response = client.get("/v1/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def found(samples: Samples, name: str, **labels: str) -> list[float]:
    return [
        got_value for got, got_value in samples.get(name, [])
        if all(got.get(key) == wanted for key, wanted in labels.items())
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    values = found(samples, name, **labels)
    assert len(values) == 1, (name, labels, samples.get(name))
    return values[0]


def until_confirmed(agent: AgentUnderTest) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    with agent.http() as client:
        while True:
            report: dict[str, Any] = client.get("/v1/reconcile").json()
            counts = report["last"]["counts"] if report["last"] else {}
            if report["confirmed"] and counts.get("iothread_plans", 0) >= 1:
                return report
            assert time.monotonic() < deadline, (report["last"]["counts"], report["last"]["steps"])
            time.sleep(0.5)


def test_per_disk_counters_and_limits(agent: AgentUnderTest, disk: str) -> None:
    # A scrape may report bulk stats up to 2 s old: the VM may not be in them yet.
    deadline = time.monotonic() + 20
    while sum(found(samples := scrape(agent), "blockplane_disk_read_ops_total", vm=VM,
                    disk=disk)) == 0:
        assert time.monotonic() < deadline, "the firmware never read the boot disk"
        time.sleep(0.5)
    assert value(samples, "blockplane_disk_read_bytes_total", vm=VM, disk=disk) > 0
    assert value(samples, "blockplane_disk_write_ops_total", vm=VM, disk=disk) >= 0
    assert value(samples, "blockplane_disk_capacity_bytes", vm=VM, disk=disk) == 64 * 2**20
    assert value(samples, "blockplane_disk_limit_iops", vm=VM, disk=disk, direction="total") == 500
    assert value(samples, "blockplane_throttle_group_limit_iops", vm=VM, group="vmgrp",
                 direction="total") == 2000
    # a throttled disk runs all its queues in one IOThread (capability throttle_multi_iothread)
    assert value(samples, "blockplane_vm_iothreads", vm=VM) == 1
    assert value(samples, "blockplane_metrics_stats_up") == 1


def test_api_latency_is_labelled_by_route_template(agent: AgentUnderTest, disk: str) -> None:
    samples = scrape(agent)
    latency = samples["blockplane_api_request_duration_seconds_count"]
    routes = {labels["route"] for labels, _ in latency}
    assert "/v1/vms/{vm}/disks" in routes and "/v1/metrics" in routes
    assert not any(VM in route.split("/") for route in routes), routes
    assert value(samples, "blockplane_api_request_duration_seconds_count", method="POST",
                 route="/v1/vms/{vm}/disks", status="201") >= 1


def test_reconcile_confirms_and_reports_in_metrics(agent: AgentUnderTest, disk: str) -> None:
    report = until_confirmed(agent)
    assert report["last"]["counts"]["thin_volumes"] == report["last"]["counts"][
        "thin_volumes_confirmed"] >= 1
    assert [step["ok"] for step in report["last"]["steps"]] == [True] * len(report["last"]["steps"])
    samples = scrape(agent)
    assert value(samples, "blockplane_reconcile_duration_seconds_count") >= 1
    assert value(samples, "blockplane_reconcile_last_duration_seconds") > 0
    assert value(samples, "blockplane_reconcile_unconfirmed", kind="iothread_plans") == 0
    assert value(samples, "blockplane_reconcile_passes_total") >= 1
    assert value(samples, "blockplane_event_lag_seconds_count") >= 1
    assert value(samples, "blockplane_hypervisor_events_total", kind="LifecycleEvent") >= 1


def test_metric_names_follow_conventions(agent: AgentUnderTest, disk: str) -> None:
    for name in scrape(agent):
        assert name.startswith("blockplane_"), name
        if "seconds" in name:
            assert name.endswith(("_seconds", "_seconds_total", "_seconds_bucket",
                                  "_seconds_count", "_seconds_sum", "_seconds_created")), name


def test_top_once_shows_the_disk(agent: AgentUnderTest, disk: str) -> None:
    frame = agent.json("top", "--once", "--vm", VM)
    (row,) = frame["disks"]
    assert (row["vm"], row["target"], row["iops_limit"], row["iothreads"]) == (VM, disk, 500, 1)
    assert row["chain"] == [f"blockplane-disk-{disk}", "vmgrp"] and row["thin"] is True
    assert frame["stats_calls"] in (1, 2)
    screen = agent.ok("top", "--once", "--vm", VM)
    assert VM in screen and "500" in screen
    bad = agent.cli("top", "--once", "--vm", "nosuchvm")
    assert bad.returncode == 2
