"""Pull backups on real images, read over NBD as backup software reads them.

A no-OS VM's disk gets written by QEMU itself (``qemu-io`` on the disk's device, through the
monitor, see ``tests.pull_helpers``), and a raw reference file gets the same bytes. Each export is
read with the NBD tools (``qemu-img convert`` from the URL, ``nbdinfo --map``) or the reference
pull client, and each restore is compared with the reference (``qemu-img compare``) and its
sha256. The module goes through one VM's life: a full export read while the VM writes, two
incrementals, a restore of the three (into a dir and a loop pool) and of push backups, the
checkpoint lost and redefined across an agent restart, QEMU killed (the bitmaps go with it: the
checkpoint is broken, refused by name, and ``auto`` falls back), a disk newer than the
checkpoint, an export's timeout, quiescing without a guest agent, and an export over TCP with
TLS (a client certificate required).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from blockplane.lab.tls import make_ca, make_host_certificate
from tests.chain_helpers import (
    Reference,
    chain_paths,
    last_json_line,
    qemu_io_write,
    same_content,
    wait_phase,
)
from tests.harness import AgentUnderTest
from tests.pull_helpers import (
    Write,
    convert_from_nbd,
    dirty_extents,
    hmp_writes,
    probe,
    pull_backup,
    pull_client,
    qemu_pid,
    raw_sha256,
    same_raw,
    write_while_running,
)

pytestmark = pytest.mark.integration

MIB = 1 << 20
VM = "pb"
SIZE = 64 * MIB


@dataclass
class Setup:
    ref: Reference
    scratch: Path
    pools: dict[str, str]
    pulled: list[Path] = field(default_factory=list)
    since_checkpoint: list[Write] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    def write(self, agent: AgentUnderTest, writes: list[Write]) -> None:
        write_while_running(agent, VM, "vda", writes)
        for offset, length, pattern in writes:
            self.ref.write(offset, length, pattern)
        self.since_checkpoint += writes

    def snapshot_of_reference(self, name: str) -> Path:
        copy = self.scratch / name
        shutil.copy(self.ref.path, copy)
        return copy


def stop_and_wait(agent: AgentUnderTest, job: str) -> dict[str, Any]:
    stopped = agent.json("backup", "stop", job)
    assert stopped["job"] == job
    return wait_phase(agent, job, ("done", "failed", "aborted"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gone_soon(path: Path, timeout_s: float = 20.0) -> bool:
    """The reconcile removes an ended export's socket directory (every 2 s here)."""
    deadline = time.monotonic() + timeout_s
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def pool_files(setup: Setup, pool: str) -> list[str]:
    return sorted(os.listdir(setup.pools[pool]))


@pytest.fixture(scope="module")
def setup(agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    scratch = tmp_path_factory.mktemp("pull")
    agent.ok("pool", "create", "pd", "--type", "dir")
    agent.ok("pool", "create", "pl", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    pools = {p["name"]: p["path"] for p in agent.json("pool", "list")}
    agent.json("vm", "create", VM, "--vcpus", "1", "--memory", "128M")
    agent.json("disk", "attach", VM, "--pool", "pd", "--size", "64M")
    ref = Reference(scratch / "vda.raw", SIZE)
    qemu_io_write(chain_paths(agent, VM, "vda")[0], 0, 48 * MIB, 0x11)
    ref.write(0, 48 * MIB, 0x11)
    agent.ok("vm", "start", VM)
    return Setup(ref, scratch, pools)


def test_a_full_export_reads_as_the_point_in_time_while_the_vm_writes(
        agent: AgentUnderTest, setup: Setup) -> None:
    answer = pull_backup(agent, VM)
    [disk] = answer["disks"]
    assert (answer["mode"], answer["phase"], answer["incremental"]) == ("pull", "running", None)
    assert disk["url"] == f"nbd+unix:///vda?socket={answer['socket']}"
    assert (disk["export"], disk["mode"], disk["size"], disk["bitmap"]) == ("vda", "full",
                                                                            SIZE, None)
    socket = Path(answer["socket"])
    assert socket.is_socket() and socket.parent.parent == agent.home / "nbd"
    assert socket.stat().st_mode & 0o777 == 0o600
    assert disk["scratch_volume"] in pool_files(setup, "pd")
    point_in_time = setup.snapshot_of_reference("full-pit.raw")

    agent.ok("agent", "stop")  # QEMU serves the export on its own meanwhile
    out = setup.scratch / "full-read.raw"
    reader = convert_from_nbd(disk["url"], out, rate="4M")  # 16 s for 64 MiB
    writes = [(0, MIB, 0x22), (30 * MIB, 2 * MIB, 0x23), (60 * MIB, MIB, 0x24)]
    probe(agent, "tests.qmp_probe", VM, json.dumps(hmp_writes("vda", writes)))
    assert reader.poll() is None, "the read ended before the VM wrote; slow it down"
    _, errors = reader.communicate(timeout=120)
    assert reader.returncode == 0, errors
    agent.ok("agent", "start")
    for offset, length, pattern in writes:
        setup.ref.write(offset, length, pattern)
    setup.since_checkpoint = list(writes)
    assert same_raw(point_in_time, out)
    assert not same_raw(setup.ref.path, out)  # the disk itself did change

    shown = agent.json("job", "show", answer["job"])
    assert shown["kind"] == "backup" and shown["spec"]["mode"] == "pull"
    assert shown["scratch"]["used"] >= 4 * MIB and shown["scratch"]["total"] == SIZE
    report = pull_client(answer, setup.scratch / "full")
    assert report["disks"]["vda"]["mode"] == "full"
    ended = stop_and_wait(agent, answer["job"])
    assert (ended["phase"], ended["outcome"]) == ("done", "succeeded"), ended
    assert disk["scratch_volume"] not in pool_files(setup, "pd")
    assert not socket.exists() and gone_soon(socket.parent)
    setup.pulled.append(setup.scratch / "full")
    setup.checkpoints.append(answer["checkpoint"])


def test_an_incremental_maps_exactly_the_extents_written_since_the_checkpoint(
        agent: AgentUnderTest, setup: Setup) -> None:
    setup.write(agent, [(4 * MIB, MIB, 0x31), (20 * MIB, 64 * 1024, 0x32),
                        (40 * MIB, 2 * MIB, 0x33)])
    answer = pull_backup(agent, VM, "--incremental", setup.checkpoints[-1],
                         "--scratch-pool", "pl")
    [disk] = answer["disks"]
    assert answer["incremental"] == setup.checkpoints[-1] and answer["fallback"] is None
    assert (disk["mode"], disk["bitmap"]) == ("incremental", "qemu:dirty-bitmap:backup-vda")
    assert disk["scratch_thin"] and disk["scratch_pool"] == "pl"
    written = sorted((offset, length) for offset, length, _ in setup.since_checkpoint)
    assert dirty_extents(disk["url"], disk["bitmap"]) == written
    thin = [row for row in agent.json("thin", "status", VM)
            if row["volume"] == disk["scratch_volume"]]
    assert [(row["state"], row["disk"] != "vda") for row in thin] == [("set", True)]

    report = pull_client(answer, setup.scratch / "inc1")
    assert report["disks"]["vda"]["bytes_read"] == sum(length for _, length in written)
    assert stop_and_wait(agent, answer["job"])["phase"] == "done"
    assert disk["scratch_volume"] not in pool_files(setup, "pl")
    assert [row for row in agent.json("thin", "status", VM)
            if row["volume"] == disk["scratch_volume"]] == []
    setup.pulled.append(setup.scratch / "inc1")
    setup.checkpoints.append(answer["checkpoint"])
    setup.since_checkpoint = []


def test_restore_of_a_full_and_two_incrementals_equals_the_source(
        agent: AgentUnderTest, setup: Setup) -> None:
    setup.write(agent, [(8 * MIB, 3 * MIB, 0x41), (63 * MIB, MIB, 0x42)])
    answer = pull_backup(agent, VM, "--incremental", "auto")
    assert answer["incremental"] == setup.checkpoints[-1]
    pull_client(answer, setup.scratch / "inc2")
    stop_and_wait(agent, answer["job"])
    setup.pulled.append(setup.scratch / "inc2")
    setup.checkpoints.append(answer["checkpoint"])
    setup.since_checkpoint = []
    manifest = json.loads((setup.scratch / "inc2" / "manifest.json").read_text())
    assert manifest["incremental"] == setup.checkpoints[-2]

    sources = [arg for path in setup.pulled for arg in ("--from", str(path))]
    for pool, name in (("pd", "restored-dir"), ("pl", "restored-thin")):
        result = agent.json("restore", *sources, "--pool", pool, "--name", name)
        assert [step["mode"] for step in result["chain"]] == ["full", "incremental",
                                                              "incremental"]
        assert result["sha256"] == raw_sha256(setup.ref.path)
        assert same_content(setup.ref.path, result["path"])
        assert result["thin"] is (pool == "pl")


def test_restore_refuses_a_broken_chain_before_creating_anything(
        agent: AgentUnderTest, setup: Setup) -> None:
    full, inc1, inc2 = (str(path) for path in setup.pulled)
    for order in ([full, inc2], [inc1, inc2], [full, inc2, inc1]):
        refused = agent.cli("restore", *[a for p in order for a in ("--from", p)],
                            "--pool", "pd", "--name", "never")
        assert refused.returncode == 2 and "restore.chain_broken" in refused.stderr, order
    assert "never" not in pool_files(setup, "pd")


def test_restore_from_push_backups(agent: AgentUnderTest, setup: Setup) -> None:
    backups = Path(setup.pools["pd"]) / "push"
    full = last_json_line(agent.ok("backup", VM, "--dest", str(backups / "full"), "--json",
                                   "--wait"))
    setup.write(agent, [(12 * MIB, MIB, 0x51)])
    incremental = last_json_line(agent.ok("backup", VM, "--dest", str(backups / "inc"),
                                          "--incremental", full["spec"]["checkpoint"], "--json",
                                          "--wait"))
    assert incremental["phase"] == "done"
    result = agent.json("restore", "--from", str(backups / "full"), "--from",
                        str(backups / "inc"), "--pool", "pl", "--name", "from-push")
    assert result["sha256"] == raw_sha256(setup.ref.path)
    setup.checkpoints.append(incremental["spec"]["checkpoint"])
    setup.since_checkpoint = []


def test_checkpoints_lost_by_libvirt_are_redefined_after_an_agent_restart(
        agent: AgentUnderTest, setup: Setup) -> None:
    before = [c["name"] for c in agent.json("checkpoint", "list", VM)]
    assert setup.checkpoints[-1] in before
    agent.ok("agent", "stop")
    dropped = json.loads(probe(agent, "tests.checkpoint_probe", VM))
    assert sorted(dropped) == sorted(before)
    agent.ok("agent", "start")
    listed = agent.json("checkpoint", "list", VM)
    assert [c["name"] for c in listed] == before
    assert {c["state"] for c in listed} == {"ok"}
    redefined = agent.json("events", "--vm", VM, "--type", "checkpoint.redefined")
    assert sorted(redefined[-1]["checkpoints"]) == sorted(before)

    setup.write(agent, [(16 * MIB, MIB, 0x61)])
    answer = pull_backup(agent, VM, "--incremental", setup.checkpoints[-1])
    [disk] = answer["disks"]
    assert dirty_extents(disk["url"], disk["bitmap"]) == [(16 * MIB, MIB)]
    stop_and_wait(agent, answer["job"])
    setup.checkpoints.append(answer["checkpoint"])
    setup.since_checkpoint = []


def test_a_broken_checkpoint_is_refused_by_name_and_auto_falls_back(
        agent: AgentUnderTest, setup: Setup) -> None:
    """QEMU killed: the bitmaps it had not written out are gone with it."""
    os.kill(qemu_pid(agent, VM), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while agent.json("vm", "show", VM)["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    agent.ok("vm", "start", VM)
    listed = {c["name"]: c for c in agent.json("checkpoint", "list", VM)}
    latest = setup.checkpoints[-1]
    assert listed[latest]["state"] == "broken"
    assert listed[latest]["disks"][0]["state"] == "broken"
    assert "broken" in agent.ok("checkpoint", "list", VM)

    jobs_before = len(agent.json("job", "list", VM))
    refused = agent.cli("backup", VM, "--pull", "--incremental", latest)
    assert refused.returncode == 2 and "checkpoint.inconsistent" in refused.stderr
    assert len(agent.json("job", "list", VM)) == jobs_before  # refused before anything began
    assert not any("scratch" in name for name in pool_files(setup, "pd"))

    answer = pull_backup(agent, VM, "--incremental", "auto")
    [disk] = answer["disks"]
    assert answer["incremental"] is None and disk["mode"] == "full"
    assert "missing or inconsistent" in answer["fallback"]
    assert latest in answer["fallback"]
    stop_and_wait(agent, answer["job"])
    setup.checkpoints.append(answer["checkpoint"])
    deleted = agent.json("checkpoint", "delete", VM, latest)  # no bitmap left: metadata only
    assert deleted["deleted"] and deleted["merged_into"] is None
    assert latest not in [c["name"] for c in agent.json("checkpoint", "list", VM)]


def test_a_disk_newer_than_the_checkpoint_is_exported_fully(
        agent: AgentUnderTest, setup: Setup) -> None:
    added = agent.json("disk", "attach", VM, "--pool", "pd", "--size", "32M")
    answer = pull_backup(agent, VM, "--incremental", setup.checkpoints[-1])
    modes = {d["target"]: (d["mode"], d["bitmap"]) for d in answer["disks"]}
    assert modes == {"vda": ("incremental", "qemu:dirty-bitmap:backup-vda"),
                     added["target"]: ("full", None)}
    [reason] = [d["reason"] for d in answer["disks"] if d["target"] == added["target"]]
    assert "attached after" in reason and answer["fallback"] == reason
    stop_and_wait(agent, answer["job"])
    setup.checkpoints.append(answer["checkpoint"])


def test_quiescing_needs_a_guest_agent(agent: AgentUnderTest, setup: Setup) -> None:
    refused = agent.cli("backup", VM, "--pull", "--require-quiesce")
    assert refused.returncode == 2 and "guest.no_agent" in refused.stderr
    answer = pull_backup(agent, VM, "--quiesce", "--disk", "vda")
    assert answer["quiesced"] is False and "no guest agent" in answer["quiesce_error"]
    assert stop_and_wait(agent, answer["job"])["phase"] == "done"
    setup.checkpoints.append(answer["checkpoint"])


def test_an_export_ends_when_its_timeout_passes(agent: AgentUnderTest, setup: Setup) -> None:
    answer = pull_backup(agent, VM, "--export-timeout", "2s", "--disk", "vda")
    ended = wait_phase(agent, answer["job"], ("done", "failed", "aborted"), timeout=60)
    assert ended["phase"] == "aborted" and "timeout" in ended["error"], ended
    assert answer["disks"][0]["scratch_volume"] not in pool_files(setup, "pd")
    assert gone_soon(Path(answer["socket"]).parent)
    refused = agent.cli("backup", "stop", "no-such-job")
    assert refused.returncode == 2


def test_an_export_over_tcp_needs_tls_and_a_client_certificate(
        agent: AgentUnderTest, setup: Setup) -> None:
    """Last: it restarts the agent with a TCP listener."""
    refused = agent.cli("backup", VM, "--pull", "--tcp")
    assert refused.returncode == 2 and "backup.tcp_unavailable" in refused.stderr
    ca = make_ca(setup.scratch / "ca")
    server = make_host_certificate(ca, setup.scratch / "server", "localhost", "127.0.0.1")
    client = make_host_certificate(ca, setup.scratch / "client", "backup-server", "127.0.0.1")
    credentials = agent.home / "nbd-tls"
    credentials.mkdir(mode=0o700)
    for name, source in (("ca-cert.pem", ca.certificate), ("server-cert.pem",
                                                            server.certificate),
                         ("server-key.pem", server.key)):
        shutil.copy(source, credentials / name)
    client_dir = setup.scratch / "client-tls"
    client_dir.mkdir()
    for name, source in (("ca-cert.pem", ca.certificate), ("client-cert.pem",
                                                            client.certificate),
                         ("client-key.pem", client.key)):
        shutil.copy(source, client_dir / name)
    agent.ok("agent", "stop")
    agent.ok("agent", "start", "--listen", f"127.0.0.1:{free_port()}")

    answer = pull_backup(agent, VM, "--tcp", "--disk", "vda")
    [disk] = answer["disks"]
    assert answer["socket"] is None and disk["url"].startswith("nbds://127.0.0.1:")

    def nbdinfo(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nbdinfo", "--size", url], capture_output=True, text=True,
                              timeout=60, check=False)

    with_certificate = nbdinfo(f"{disk['url']}?tls-certificates={client_dir}")
    assert with_certificate.stdout.strip() == str(SIZE), with_certificate.stderr
    assert nbdinfo(disk["url"]).returncode != 0  # no client certificate: refused
    assert nbdinfo(disk["url"].replace("nbds://", "nbd://", 1)).returncode != 0  # no TLS
    assert stop_and_wait(agent, answer["job"])["phase"] == "done"
    setup.checkpoints.append(answer["checkpoint"])
