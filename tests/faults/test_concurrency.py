"""Concurrency: waves of simultaneous disk attaches, detaches and throttle-group updates on one
VM, and Idempotency-Key replays racing each other.

The VM is the Linux test guest, running (so detaches are live unplugs the guest acknowledges);
without the guest image it is a stopped no-OS VM. After every wave:

- every request was applied (2xx) or cleanly refused (4xx problem+json with a code), never 5xx,
  and the wave finished within a bound (no deadlock);
- no IOThread is lost, duplicated or left serving nothing, and every virtqueue of every disk is
  mapped to exactly one IOThread (``blockplane iothreads VM --json`` and the live XML agree);
- the store agrees with the live XML: managed disks, pool volumes and the files behind them;
- each throttle group holds one of the values sent to it, in the store and in the live XML;
- with the Linux guest, the guest sees exactly the disks the live XML has.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import pytest
from lxml import etree

from tests.harness import AgentUnderTest, linux_guest_available

pytestmark = pytest.mark.faults

VM = "conc-vm"
POOL = "conc-pool"
GROUPS = ("cg0", "cg1", "cg2", "cg3")
WAVE_TIMEOUT_S = 240.0
LIVE = linux_guest_available()


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    body: Any = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    request: Request
    status: int
    code: str | None
    body: Any
    replayed: bool


def _send(agent: AgentUnderTest, request: Request, barrier: threading.Barrier) -> Outcome:
    with agent.http() as client:
        barrier.wait(timeout=60)
        response = client.request(
            request.method, request.path, json=request.body, headers=request.headers
        )
    body = response.json()
    content_type = response.headers["content-type"]
    if response.status_code < 400:
        assert content_type.startswith("application/json"), content_type
        code = None
    else:
        assert content_type.startswith("application/problem+json"), content_type
        code = body["code"]
    replayed = response.headers.get("idempotency-replayed") == "true"
    return Outcome(request, response.status_code, code, body, replayed)


def run_wave(agent: AgentUnderTest, requests: list[Request]) -> list[Outcome]:
    """Send ``requests`` all at once; every one must be answered 2xx or 4xx, within the bound."""
    barrier = threading.Barrier(len(requests))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(_send, agent, request, barrier) for request in requests]
        _, pending = wait(futures, timeout=WAVE_TIMEOUT_S)
        assert not pending, f"{len(pending)} requests unanswered after {WAVE_TIMEOUT_S:.0f} s"
    outcomes = [future.result() for future in futures]
    server_errors = [(o.request, o.status, o.body) for o in outcomes if o.status >= 500]
    assert server_errors == []
    tally = Counter(f"{o.request.kind} {o.status}" for o in outcomes)
    print(f"\nwave of {len(requests)} in {time.monotonic() - started:.1f} s: {dict(tally)}")
    return outcomes


def attach(body: dict[str, Any], kind: str = "attach") -> Request:
    return Request(kind, "POST", f"/v1/vms/{VM}/disks", {"pool": POOL, "size": "8M", **body})


def detach(target: str) -> Request:
    return Request("detach", "DELETE", f"/v1/vms/{VM}/disks/{target}")


def throttle(group: str, limits: dict[str, Any]) -> Request:
    return Request("throttle", "PUT", f"/v1/vms/{VM}/throttle-groups/{group}", {"limits": limits})


VALID_SHAPES: list[dict[str, Any]] = [
    {"queues": 1 + index % 4, "io_threads": [None, 0, 1, 2, 3][index % 5],
     "bus": "scsi" if index % 5 == 4 else "virtio",
     "throttle_groups": [[], ["cg0"], ["cg1", "cg2"]][index % 3]}
    for index in range(16)
]
INVALID: list[tuple[dict[str, Any], int, str]] = [
    ({"pool": "no-such-pool"}, 404, "pool.not_found"),
    ({"size": "0"}, 400, "size.invalid"),
    ({"size": "-1M"}, 400, "size.invalid"),
    ({"size": "65T"}, 400, "size.invalid"),
    ({"io_threads": 5000}, 400, "iothreads.invalid"),
    ({"queues": 0}, 400, "iothreads.invalid"),
    ({"bus": "ide"}, 400, "disk.invalid"),
    ({"format": "vmdk"}, 400, "volume.invalid"),
    ({"name": "../escape"}, 400, "path.escape"),
    ({"limits": {"total_iops_sec": -1}}, 400, "throttle.negative"),
    ({"throttle_groups": ["no-such-group"]}, 404, ""),
    ({"limits": {"no_such_limit": 1}}, 400, "throttle.unknown_field"),
    ({"thin": True, "format": "raw"}, 400, "volume.invalid"),
    ({"io_threads": -1}, 400, "iothreads.invalid"),
]


def _expect_refusals(outcomes: list[Outcome], kind: str, expected: list[tuple[int, str]]) -> None:
    got = sorted((o.status, o.code or "") for o in outcomes if o.request.kind == kind)
    want = sorted(expected)
    assert [status for status, _ in got] == [status for status, _ in want], got
    for (_, code), (_, wanted) in zip(got, want, strict=True):
        assert not wanted or code == wanted or code.split(".")[0] == wanted.split(".")[0], got


@pytest.fixture(scope="module")
def conc_vm(agent: AgentUnderTest) -> Iterator[str]:
    agent.ok("pool", "create", POOL, "--type", "dir")
    create = ["vm", "create", VM, "--vcpus", "2", "--memory", "512M"]
    agent.ok(*create, *(["--guest", "linux", "--start"] if LIVE else []))
    for group in GROUPS:
        agent.ok("throttle", "set", VM, group, "--total-iops-sec", "1000")
    yield VM


def _live_xml(agent: AgentUnderTest) -> Any:
    return etree.fromstring(agent.ok("vm", "show", VM, "--xml").encode())


def assert_consistent(agent: AgentUnderTest, sent_limits: dict[str, set[int]]) -> int:
    """Everything in the module docstring's list; returns the number of disks."""
    report = agent.json("iothreads", VM)
    assert report["disagreements"] == []
    ids = [thread["id"] for thread in report["iothreads"]]
    assert len(ids) == len(set(ids)), f"duplicated IOThreads {ids}"
    for thread in report["iothreads"]:
        assert thread["serves"], f"IOThread {thread['id']} serves nothing"
    for disk in report["disks"]:
        if disk["mode"] == "mapped":
            queues = sorted(q for _, mapped in disk["mapping"] for q in mapped)
            assert queues == list(range(disk["queues"])), disk
        served = sorted(
            q for thread in report["iothreads"] for serve in thread["serves"]
            if serve["disk"] == disk["target"] for q in serve["queues"]
        )
        if disk["mode"] == "mapped":
            assert served == list(range(disk["queues"])), (disk, served)

    root = _live_xml(agent)
    xml_ids = [int(node.get("id")) for node in root.findall("iothreadids/iothread")]
    assert sorted(xml_ids) == sorted(ids) and len(xml_ids) == len(set(xml_ids))
    referenced: set[int] = set()
    for driver in root.iterfind(".//devices/*/driver"):
        if driver.get("iothread"):
            referenced.add(int(driver.get("iothread")))
        mapped = driver.findall("iothreads/iothread")
        if mapped:
            queue_ids = sorted(int(q.get("id")) for node in mapped for q in node.findall("queue"))
            assert queue_ids == list(range(int(driver.get("queues", "1")))), etree.tostring(driver)
            referenced |= {int(node.get("id")) for node in mapped}
    assert referenced == set(xml_ids), f"IOThreads {set(xml_ids) - referenced} serve nothing"

    live_targets = {node.get("dev") for node in root.findall("devices/disk/target")}
    disks = agent.json("disk", "list", VM)
    assert {d["target"] for d in disks if d["managed"]} == live_targets
    volumes = {d["volume"] for d in disks}
    assert agent.json("pool", "show", POOL)["volumes"] == len(volumes)
    assert {path.name for path in (agent.home / "pools" / POOL).iterdir()} == volumes

    live_groups = {
        node.findtext("group_name"): int(node.findtext("total_iops_sec") or 0)
        for node in root.findall("throttlegroups/throttlegroup")
    }
    for group in GROUPS:
        stored = agent.json("throttle", "info", VM, group)["limits"].get("total_iops_sec", 0)
        assert stored == live_groups[group], (group, stored, live_groups)
        assert stored in sent_limits[group], (group, stored, sent_limits[group])
    if LIVE:
        _assert_guest_sees(agent, len(live_targets))
    return len(live_targets)


def _assert_guest_sees(agent: AgentUnderTest, count: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        seen = agent.ok("guest", "exec", VM, "--", "/bin/sh", "-c", "ls /sys/block").split()
        disks = [name for name in seen if name.startswith(("vd", "sd"))]
        if len(disks) == count or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(disks) == count, f"the guest sees {disks}, the live XML has {count} disks"


def test_concurrent_attach_detach_and_throttle_updates(
    agent: AgentUnderTest, conc_vm: str
) -> None:
    sent: dict[str, set[int]] = {group: {1000} for group in GROUPS}
    # Wave 1: 32 attaches at once; 16 valid, 2 racing for one name, 14 invalid.
    wave = [attach(shape) for shape in VALID_SHAPES]
    wave += [attach({"name": "dup"}, "dup"), attach({"name": "dup"}, "dup")]
    wave += [attach(body, "invalid") for body, _, _ in INVALID]
    assert len(wave) == 32
    outcomes = run_wave(agent, wave)
    assert [o.status for o in outcomes if o.request.kind == "attach"] == [201] * 16
    assert sorted(o.status for o in outcomes if o.request.kind == "dup") == [201, 409]
    _expect_refusals(outcomes, "invalid", [(status, code) for _, status, code in INVALID])
    assert assert_consistent(agent, sent) == 17

    # Wave 2: 16 detaches + 16 attaches (10 valid, 6 invalid) + 32 throttle updates, at once.
    targets = [o.body["target"] for o in outcomes if o.status == 201][:16]
    wave = [detach(target) for target in targets]
    wave += [attach(shape) for shape in VALID_SHAPES[:10]]
    wave += [attach(body, "invalid") for body, _, _ in INVALID[:6]]
    updates: list[Request] = []
    for index in range(28):
        group, value = GROUPS[index % 4], 100 * (index + 1)
        sent[group].add(value)
        updates.append(throttle(group, {"total_iops_sec": value}))
    updates += [
        throttle("cg0", {"total_iops_sec": -5}),
        throttle("cg1", {"total_iops_sec": "many"}),
        throttle("cg2", {"no_such_limit": 5}),
        throttle("bad name", {"total_iops_sec": 5}),
    ]
    outcomes = run_wave(agent, wave + updates)
    assert [o.status for o in outcomes if o.request.kind == "detach"] == [200] * 16
    assert [o.status for o in outcomes if o.request.kind == "attach"] == [201] * 10
    _expect_refusals(outcomes, "invalid", [(status, code) for _, status, code in INVALID[:6]])
    throttled = [o for o in outcomes if o.request.kind == "throttle"]
    assert sorted(o.status for o in throttled) == [200] * 28 + [400] * 4
    for outcome in throttled:
        if outcome.status == 200:
            assert outcome.body["limits"]["total_iops_sec"] in sent[outcome.body["group"]]
    assert assert_consistent(agent, sent) == 11

    # Wave 3: more attaches than the VM has PCI slots left; the surplus is refused (409).
    outcomes = run_wave(agent, [attach({"queues": 2}) for _ in range(24)])
    refused = [o for o in outcomes if o.status != 201]
    assert refused and {(o.status, o.code) for o in refused} == {(409, "vm.no_free_slot")}
    remaining = assert_consistent(agent, sent)
    assert remaining == 11 + 24 - len(refused)

    # Wave 4: detach everything at once; nothing may remain, IOThreads included.
    targets = [d["target"] for d in agent.json("disk", "list", VM)]
    outcomes = run_wave(agent, [detach(target) for target in targets])
    assert {o.status for o in outcomes} == {200}
    assert assert_consistent(agent, sent) == 0
    assert agent.json("iothreads", VM)["iothreads"] == []


def test_idempotent_attach_and_detach_act_once_under_concurrency(
    agent: AgentUnderTest, conc_vm: str
) -> None:
    def count(event: str) -> int:
        return sum(1 for e in agent.json("events", "--type", event, "--vm", VM, "--limit", "10000"))

    attached, detached = count("disk.attached"), count("disk.detached")
    before = {d["target"] for d in agent.json("disk", "list", VM)}
    key = {"Idempotency-Key": "conc-attach-1"}
    outcomes = run_wave(
        agent, [Request("attach", "POST", f"/v1/vms/{VM}/disks",
                        {"pool": POOL, "size": "8M", "queues": 2}, key) for _ in range(8)]
    )
    assert {o.status for o in outcomes} == {201}
    assert all(o.body == outcomes[0].body for o in outcomes)
    assert sum(not o.replayed for o in outcomes) == 1
    target = outcomes[0].body["target"]
    assert {d["target"] for d in agent.json("disk", "list", VM)} == before | {target}
    assert count("disk.attached") == attached + 1

    key = {"Idempotency-Key": "conc-detach-1"}
    outcomes = run_wave(
        agent, [Request("detach", "DELETE", f"/v1/vms/{VM}/disks/{target}", None, key)] * 8
    )
    assert {o.status for o in outcomes} == {200}
    assert all(o.body == outcomes[0].body for o in outcomes)
    assert {d["target"] for d in agent.json("disk", "list", VM)} == before
    assert count("disk.detached") == detached + 1
    assert_consistent(agent, {group: set(range(0, 10**6, 100)) for group in GROUPS})
