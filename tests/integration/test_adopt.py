"""A platform's domain, defined by hand with virsh, taken under management and let go again.

Runs twice: on the agent's embedded libvirt and on the system daemon (``qemu:///system``,
started by the test if it is not running). The domain runs, with two disks in pools (a chain of
two in a dir pool, on IOThread 101 under a throttle group; a qcow2 on a loop device), one disk
outside every pool (with its own ``<iotune>``). Adopted: nothing about it changes; blockplane
then attaches, throttles, snapshots, commits and backs up around what was there, refuses to
write the foreign disk, survives an agent restart, and on release leaves the domain as the
platform had it plus the disk it attached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.adopt_support import (
    PlatformDisks,
    PlatformHost,
    assert_valid,
    platform_disks,
    platform_domain_xml,
    platform_view,
    single_disk_xml,
)
from tests.faults.consistency import api_get, events_of, wait_for
from tests.harness import AgentUnderTest, cleanup_agent, validate_domain_xml
from tests.system_daemon import SystemAgent, daemon_pid
from tests.system_daemon import daemons as daemons  # the module's system daemon

SYSTEM_AVAILABLE = os.geteuid() == 0 and os.path.exists("/usr/sbin/libvirtd")


@dataclass
class Scene:
    host: PlatformHost
    name: str
    tmp: Path
    disks: PlatformDisks | None = None
    before: str = ""
    others: list[str] = field(default_factory=list)

    @property
    def agent(self) -> AgentUnderTest:
        return self.host.agent

    def pool_path(self, pool: str) -> Path:
        return Path(self.agent.json("pool", "show", pool)["path"])

    def other(self, suffix: str) -> str:
        name = f"{self.name}{suffix}"
        self.others.append(name)
        return name


@pytest.fixture(scope="module", params=["embed", "system"])
def scene(request: pytest.FixtureRequest) -> Iterator[Scene]:
    system = request.param == "system"
    if system:
        if not SYSTEM_AVAILABLE:
            pytest.skip("needs libvirtd (the system daemon) and root")
        request.getfixturevalue("daemons")
        assert daemon_pid("libvirtd") is not None
        agent: AgentUnderTest = SystemAgent(Path(tempfile.mkdtemp(prefix="bp-ad-", dir="/tmp")))
        agent.ok("agent", "start")
        name = f"bpadopt{os.getpid()}"
    else:
        agent = request.getfixturevalue("agent")
        name = "plat"
    tmp = Path(tempfile.mkdtemp(prefix="bp-adx-", dir="/tmp"))
    host = PlatformHost(agent, system)
    state = Scene(host, name, tmp)
    try:
        agent.ok("pool", "create", "pd", "--type", "dir")
        agent.ok("pool", "create", "pl", "--type", "loop", "--chunk", "64M")
        yield state
    finally:
        problems = []
        with host.libvirt():
            for domain in [name, *state.others]:
                xml = host.virsh("dumpxml", domain, check=False)
                if not xml:
                    continue
                problems.append(validate_domain_xml(xml, domain))
                host.virsh("destroy", domain, check=False)
                host.virsh("undefine", domain, "--checkpoints-metadata", check=False)
        if system:
            cleanup_agent(agent)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not [problem for problem in problems if problem], problems


def fails(agent: AgentUnderTest, code: str, *args: str) -> str:
    result = agent.cli(*args)
    assert result.returncode == 2, (args, result.returncode, result.stderr)
    assert f"[{code}]" in result.stderr, (args, result.stderr)
    return result.stderr


def waited(agent: AgentUnderTest, *args: str) -> dict[str, Any]:
    """A ``--wait --json`` job command: it prints the job as it goes; the last line is the end."""
    lines = agent.ok(*args, "--json", timeout=300).strip().splitlines()
    job: dict[str, Any] = json.loads(lines[-1])
    return job


def by_target(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["target"]: item for item in items}


def test_a_running_domain_is_adopted_as_it_is(scene: Scene) -> None:
    agent, name = scene.agent, scene.name
    disks = platform_disks(agent, name, scene.pool_path("pd"), scene.pool_path("pl"))
    scene.disks = disks
    scene.host.define_and_start(platform_domain_xml(name, disks), name, scene.tmp)
    scene.before = scene.host.dumpxml(name, inactive=True)
    assert_valid(scene.before, f"{name} as defined")
    live_before = scene.host.dumpxml(name)

    result = agent.json("vm", "adopt", name)

    assert result["running"] is True
    managed = by_target(result["disks"])
    assert set(managed) == {"vda", "vdb"}
    assert (managed["vda"]["pool"], managed["vda"]["volume"]) == ("pd", f"{name}-root.qcow2")
    assert [v["volume"] for v in managed["vda"]["chain_volumes"]] == [
        f"{name}-root.qcow2", f"{name}-base.qcow2"]
    assert managed["vda"]["thin"] is False and managed["vda"]["iothreads"] == [101]
    assert (managed["vdb"]["pool"], managed["vdb"]["volume"]) == ("pl", f"{name}-data")
    assert managed["vdb"]["thin"] is True
    (foreign,) = result["foreign"]
    assert foreign["target"] == "vdc" and foreign["reason"] == "outside every pool"
    assert foreign["iotune"] == {"total_iops_sec": 1000}
    assert result["iotune"] == {"vdc": {"total_iops_sec": 1000}}
    assert result["reserved_iothreads"] == [101]
    assert result["throttle_groups"] == [{"name": "plat-gold",
                                          "limits": {"total_iops_sec": 500}}]

    shown = agent.json("vm", "show", name)
    assert (shown["managed"], shown["adopted"], shown["state"]) == (True, True, "running")
    listed = by_target(agent.json("disk", "list", name))
    assert listed["vdc"]["foreign"] == "outside every pool" and not listed["vdc"]["managed"]
    assert listed["vda"]["managed"] and listed["vdb"]["managed"]
    thin = {row["target"]: row for row in agent.json("thin", "status", name)}
    assert thin["vdb"]["state"] == "set" and thin["vdb"]["threshold"]
    assert agent.json("iothreads", name)["disagreements"] == []
    assert agent.json("throttle", "info", name, "plat-gold")["limits"] == {"total_iops_sec": 500}
    # Nothing the guest or the platform sees changed.
    assert platform_view(scene.host.dumpxml(name)) == platform_view(live_before)
    assert platform_view(scene.host.dumpxml(name, inactive=True)) == platform_view(scene.before)


def test_what_cannot_be_adopted_is_refused_with_nothing_recorded(scene: Scene) -> None:
    agent, name = scene.agent, scene.name
    assert scene.disks is not None
    fails(agent, "adopt.refused", "vm", "adopt", name)
    # Another domain that shares the adopted VM's disk and has a chain element missing.
    pool = scene.pool_path("pd")
    orphan = pool / f"{name}-orphan.qcow2"
    missing = pool / f"{name}-gone-base.qcow2"
    os.system(f"qemu-img create -q -f qcow2 {missing} 64M")  # noqa: S605 - fixed test paths
    os.system(f"qemu-img create -q -f qcow2 -b {missing} -F qcow2 {orphan}")  # noqa: S605
    missing.unlink()
    other = scene.other("b")
    xml = single_disk_xml(other, orphan).replace(
        "</devices>",
        f"<disk type='block' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source dev='{scene.disks.data_device}'/><target dev='vdb' bus='virtio'/></disk>"
        "</devices>")
    path = scene.tmp / f"{other}.xml"
    path.write_text(xml)
    with scene.host.libvirt():
        scene.host.virsh("define", str(path))
    volumes_before = agent.json("pool", "show", "pd")["volumes"]
    with agent.http() as client:
        answer = client.post(f"/v1/vms/{other}/adopt", json={})
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert problem["code"] == "adopt.refused"
    reasons = {item["item"]: item["reason"] for item in problem["refusals"]}
    assert reasons["vda"] == f"chain element {missing} is missing on disk"
    assert f"in use by managed VM {name}" in reasons["vdb"]
    assert agent.json("vm", "show", other)["managed"] is False
    assert agent.json("pool", "show", "pd")["volumes"] == volumes_before
    orphan.unlink()


def test_attach_throttle_snapshot_commit_and_backup_around_it(scene: Scene) -> None:
    agent, name = scene.agent, scene.name
    agent.ok("throttle", "set", name, "bp-tier", "--total-iops-sec", "2000")
    request = ("--pool", "pl", "--size", "256M", "--thin", "--queues", "2", "--io-threads",
               "2", "--throttle-groups", "bp-tier")
    plan = agent.json("plan", "disk", name, *request)
    disk = agent.json("disk", "attach", name, *request)
    assert disk["target"] == plan["target"] == "vdd"
    assert plan["iothreads_to_add"] == [102]  # 101 is the platform's: skipped
    mapping = by_target(agent.json("iothreads", name)["disks"])["vdd"]["mapping"]
    assert mapping == plan["iothreads"]["mapping"] == [[102, [0, 1]]]
    thin = {row["target"]: row for row in agent.json("thin", "status", name)}
    assert thin["vdd"]["state"] == "set"
    info = agent.json("throttle", "set", name, "bp-tier", "--total-iops-sec", "3000")
    assert info["limits"] == {"total_iops_sec": 3000}

    root = str(scene.disks.root if scene.disks else "")
    agent.json("snapshot", "create", name, "--name", "s1", "--disk", "vda", "--disk", "vdd")
    chain = agent.json("chain", name, "vda")["elements"]
    assert [e["path"] for e in chain][1] == root and len(chain) == 3
    job = waited(agent, "commit", name, "vda", "--base", "vda[1]", "--pivot", "--wait")
    assert job["phase"] == "done", job
    assert agent.json("chain", name, "vda")["elements"][0]["path"] == root

    dest = scene.pool_path("pd") / "backup1"
    job = waited(agent, "backup", name, "--dest", str(dest), "--wait")
    assert job["phase"] == "done", job
    assert sorted(p.name for p in dest.iterdir()) == ["vda.qcow2", "vdb.qcow2", "vdd.qcow2"]


def test_the_foreign_disk_is_never_written(scene: Scene) -> None:
    agent, name = scene.agent, scene.name
    assert scene.disks is not None
    foreign = scene.disks.foreign
    digest = hashlib.sha256(foreign.read_bytes()).hexdigest()
    stat = foreign.stat()
    dest = scene.pool_path("pd") / "backup-foreign"
    for args in (
        ("disk", "detach", name, "vdc"),
        ("snapshot", "create", name, "--disk", "vdc"),
        ("commit", name, "vdc"),
        ("pull", name, "vdc"),
        ("copy", name, "vdc", "--pool", "pd"),
        ("backup", name, "--dest", str(dest), "--disk", "vdc"),
    ):
        fails(agent, "disk.foreign", *args)
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == digest
    assert foreign.stat().st_mtime_ns == stat.st_mtime_ns
    assert not dest.exists()
    assert "vdc" in by_target(agent.json("disk", "list", name))


def test_an_agent_restart_picks_the_adopted_domain_up(scene: Scene) -> None:
    agent, name = scene.agent, scene.name
    agent.ok("agent", "stop")
    agent.ok("agent", "start")
    shown = agent.json("vm", "show", name)
    assert (shown["managed"], shown["adopted"], shown["state"]) == (True, True, "running")
    assert shown["reserved_iothreads"] == [101]
    listed = by_target(agent.json("disk", "list", name))
    assert {t for t, d in listed.items() if d["managed"]} == {"vda", "vdb", "vdd"}
    assert listed["vdc"]["foreign"]
    wait_for(lambda: all(row["state"] == "set" for row in api_get(agent, "/thin", vm=name)),
             "the thin volumes to be armed again", 30)
    plan = agent.json("plan", "disk", name, "--queues", "2", "--io-threads", "2")
    assert plan["target"] == "vde" and 101 not in plan["iothreads_to_add"]
    fails(agent, "disk.foreign", "disk", "detach", name, "vdc")


def test_release_leaves_the_domain_as_the_platform_had_it(scene: Scene) -> None:
    agent, name = scene.agent, scene.name
    assert scene.disks is not None
    released = agent.json("vm", "release", name)
    assert released["adopted"] is True and released["domain_present"] is True
    assert set(released["disks"]) == {"vda", "vdb", "vdd"}
    shown = agent.json("vm", "show", name)
    assert (shown["managed"], shown["state"]) == (False, "running")
    assert [row for row in agent.json("thin", "status") if row["vm"] == name] == []
    assert agent.json("pool", "show", "pd")["volumes"] == 0
    assert agent.json("pool", "show", "pl")["volumes"] == 0
    for path in (scene.disks.root, scene.disks.base, scene.disks.data_file, scene.disks.foreign):
        assert path.exists(), path
    after = scene.host.dumpxml(name, inactive=True)
    assert_valid(after, f"{name} released")
    assert_valid(scene.host.dumpxml(name), f"{name} released (live)")
    assert platform_view(after, targets=["vdd"], iothreads=[102], groups=["bp-tier"]) == \
        platform_view(scene.before)
    fails(agent, "vm.not_found", "vm", "release", name)


def test_an_adopted_domain_undefined_elsewhere_is_reported_not_recreated(scene: Scene) -> None:
    agent = scene.agent
    gone = scene.other("gone")
    image = scene.pool_path("pd") / f"{gone}.qcow2"
    os.system(f"qemu-img create -q -f qcow2 {image} 64M")  # noqa: S605 - a fixed test path
    scene.host.define_and_start(single_disk_xml(gone, image), gone, scene.tmp,
                                ("checkpoint-create-as", gone, "--name", "platform-cp0"))
    adopted = agent.json("vm", "adopt", gone)
    assert adopted["checkpoints"] == ["platform-cp0"]  # kept as they are, the base of backups
    assert [c["name"] for c in agent.json("checkpoint", "list", gone)] == ["platform-cp0"]
    with scene.host.libvirt():
        scene.host.virsh("destroy", gone, check=False)
        scene.host.virsh("undefine", gone, "--checkpoints-metadata")
    wait_for(lambda: bool(events_of(agent, "vm.undefined", gone)), "vm.undefined", 60)
    shown = agent.json("vm", "show", gone)
    assert (shown["state"], shown["managed"]) == ("undefined", True) and shown["gone_since"]
    assert {vm["name"]: vm["state"] for vm in agent.json("vm", "list")}[gone] == "undefined"
    if scene.host.system:  # not recreated (on embed, virsh would need the agent stopped)
        assert gone not in scene.host.virsh("list", "--all", "--name").split()
    assert len(events_of(agent, "vm.undefined", gone)) == 1
    released = agent.json("vm", "release", gone)
    assert released["domain_present"] is False
    image.unlink()


def test_a_block_job_running_at_adoption_is_tracked(scene: Scene) -> None:
    agent = scene.agent
    name = scene.other("job")
    image = scene.pool_path("pd") / f"{name}.qcow2"
    os.system(f"qemu-img create -q -f qcow2 {image} 256M")  # noqa: S605 - a fixed test path
    os.system(f"qemu-io -f qcow2 -c 'write 0 32M' {image} >/dev/null")  # noqa: S605
    copy = agent.home / "platform" / f"{name}-copy.qcow2"
    copy.parent.mkdir(mode=0o711, exist_ok=True)
    scene.host.define_and_start(
        single_disk_xml(name, image), name, scene.tmp,
        ("blockcopy", name, "vda", "--dest", str(copy), "--transient-job", "--bandwidth", "1"))
    result = agent.json("vm", "adopt", name)
    (job_id,) = result["jobs"]
    job = agent.json("job", "show", job_id)
    assert (job["kind"], job["target"]) == ("copy", "vda")
    assert job["phase"] in ("running", "ready")
    fails(agent, "job.busy", "vm", "release", name)  # not while a job runs on it
    agent.json("job", "abort", job_id)
    wait_for(lambda: api_get(agent, f"/jobs/{job_id}")["phase"] == "aborted",
             "the tracked copy to end aborted", 60)
    assert agent.json("chain", name, "vda")["elements"][0]["path"] == str(image)
    agent.json("vm", "release", name)
    copy.unlink(missing_ok=True)
