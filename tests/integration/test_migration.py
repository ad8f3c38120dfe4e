"""``vm migrate`` between two lab hosts (each its own libvirtd, agent and pools), no-OS VMs.

A VM with a thin disk under a 2-filter throttle chain (one IOThread: a throttled disk keeps its
queues on one) and a second disk with 2 queues mapped over 2 IOThreads migrates there and back:
after each hop, live XML = store = plan on the host that holds it, its thin volume is armed,
the throttle groups and the data came along, and the other host has nothing left. A disk on the
shared directory moves with ``--copy-storage none``, without a copy. An abort during a slow
copy leaves the VM where it was and the destination clean. Each refusal (a block job, a
snapshot being taken, a pool missing there, too little room, a destination that cannot receive,
a wrong token, a wrong CA) changes nothing on either host.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockplane.lab import host_command, load
from blockplane.migration.phases import MigrationPhase
from tests.lab_support import Lab, LabHost
from tests.migration_support import (
    FAST,
    SHARED,
    assert_gone,
    assert_holds,
    destroy_everywhere,
    disk_path,
    ensure_pools,
    job_of,
    jobs_of,
    make_vm,
    migrate,
    migrated,
    qemu_io,
    restart_agent,
    rows,
    running_vms,
    same_content,
    unique,
    wait_ended,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(lab: Lab) -> tuple[LabHost, LabHost]:
    ensure_pools(lab)
    return lab.hosts[0], lab.hosts[1]


@pytest.fixture(autouse=True)
def no_migration_in_flight(hosts: tuple[LabHost, LabHost]) -> None:
    """Each test starts with every earlier migration over on both hosts: a destination may still
    be rolling back the previous test's (deleting its volumes) while this one compares state."""
    source_ended = {phase.value for phase in MigrationPhase if phase.terminal}
    # A destination row left "prepared" waits for its source or its lease; only a finish or a
    # roll-back under way changes what a test sees.
    destination_moving = ("finishing", "rolling_back")

    def settled() -> bool:
        for host in hosts:
            for role, phase in rows(host, "SELECT role, phase FROM migrations"):
                if (phase not in source_ended) if role == "source" else (
                        phase in destination_moving):
                    return False
        return True

    wait_for(settled, "the earlier migrations to end on both hosts", timeout=90)


@pytest.fixture
def vm(lab: Lab) -> Iterator[str]:
    name = unique("mig")
    try:
        yield name
    finally:
        destroy_everywhere(lab, name)


def volumes_of(host: LabHost, vm: str) -> set[str]:
    return {name for (name,) in rows(host, "SELECT volume FROM disks WHERE vm = ?", vm)}


def nothing_changed(lab: Lab, source: LabHost, destination: LabHost, vm: str,
                    before: dict[str, object]) -> None:
    assert vm in running_vms(source)
    assert snapshot_of(source, destination, vm) == before
    assert_holds(lab, source, vm)


def snapshot_of(source: LabHost, destination: LabHost, vm: str) -> dict[str, object]:
    return {
        "source_disks": rows(source, "SELECT target, pool, volume, plan_json FROM disks "
                             "WHERE vm = ? ORDER BY target", vm),
        "source_migrations": rows(source, "SELECT id FROM migrations"),
        "destination_volumes": rows(destination, "SELECT pool, name FROM volumes ORDER BY 1, 2"),
        "destination_migrations": rows(destination, "SELECT id FROM migrations"),
        "destination_vms": sorted(running_vms(destination)),
    }


def test_a_vm_migrates_there_and_back_with_its_mapping_groups_thin_volume_and_data(
    lab: Lab, hosts: tuple[LabHost, LabHost], vm: str, tmp_path: Path
) -> None:
    one, two = hosts
    reference = make_vm(one, vm, data_mib=16, reference=tmp_path / "vda.raw")
    assert reference is not None
    before = assert_holds(lab, one, vm)["live"]
    volumes = volumes_of(one, vm)

    job = migrated(one, vm, two.name)
    assert job["kind"] == "migrate" and job["outcome"] == "succeeded" and job["error"] is None
    assert set(job["phase_seconds"]) >= {"check", "prepare", "migrate", "finish", "cleanup"}
    assert job["downtime_ms"] is not None
    by_disk = {disk["target"]: disk for disk in job["spec"]["disks"]}
    assert by_disk["vda"]["storage"] == "copied" and by_disk["vda"]["thin"]
    assert by_disk["vdb"]["iothreads"] == before["vdb"][1]  # this host runs it as it is
    there = assert_holds(lab, two, vm)["live"]
    assert {t: m for t, (_, m) in there.items()} == {t: m for t, (_, m) in before.items()}
    assert_gone(lab, one, vm, volumes)
    groups = {group["group"]: group for group in two.json("throttle", "list", vm)}
    assert set(groups) == {"tier1", "tier2"}
    assert groups["tier1"]["limits"]["total_iops_sec"] == 20000
    assert same_content(reference.path, disk_path(lab, two, vm, "vda"))
    # the destination's thin volume started at what was measured plus one chunk
    (physical,) = rows(two, "SELECT physical_bytes FROM volumes v JOIN disks d ON "
                       "d.pool = v.pool AND d.volume = v.name WHERE d.vm = ? AND "
                       "d.target = 'vda'", vm)[0]
    assert 64 << 20 < physical < 256 << 20
    # the job shows on the source, the VM and its history on the destination
    assert [j["id"] for j in jobs_of(one, vm)] == [job["id"]]
    assert any(e["type"] == "vm.migrated_in" for e in two.json("events", "--vm", vm))

    qemu_io(two, vm, "vda", "write -P 0x33 40M 4M")
    reference.write(40 << 20, 4 << 20, 0x33)
    back = migrated(two, vm, one.name, "--max-downtime", "300", "--bandwidth", "512M")
    assert back["outcome"] == "succeeded"
    assert back["spec"]["max_downtime_ms"] == 300 and back["spec"]["bandwidth"] == 512 << 20
    assert_holds(lab, one, vm)
    assert_gone(lab, two, vm, volumes_of(one, vm) | volumes)
    assert same_content(reference.path, disk_path(lab, one, vm, "vda"))


def test_a_disk_on_the_shared_directory_moves_without_a_copy(
    lab: Lab, hosts: tuple[LabHost, LabHost], vm: str
) -> None:
    one, two = hosts
    one.ok("vm", "create", vm, "--vcpus", "1", "--memory", "128M", "--start")
    one.ok("disk", "attach", vm, "--pool", SHARED, "--size", "64M", "--queues", "2",
           "--io-threads", "2")
    qemu_io(one, vm, "vda", "write -P 0x44 0 2M")
    (path,) = rows(one, "SELECT v.path FROM volumes v JOIN disks d ON d.pool = v.pool AND "
                   "d.volume = v.name WHERE d.vm = ?", vm)[0]
    job = migrated(one, vm, two.name, "--copy-storage", "none")
    assert [d["storage"] for d in job["spec"]["disks"]] == ["shared"]
    assert vm in running_vms(two) and vm not in running_vms(one)
    assert rows(two, "SELECT v.path FROM volumes v JOIN disks d ON d.pool = v.pool AND "
                "d.volume = v.name WHERE d.vm = ?", vm) == [(path,)]
    assert rows(one, "SELECT name FROM volumes WHERE pool = ?", SHARED) == []
    assert Path(lab.shared_dir / Path(path).relative_to(lab.shared)).exists()  # not deleted
    report = two.json("iothreads", vm)
    assert report["disagreements"] == [] and report["disks"][0]["queues"] == 2
    # and back again, still on the same file
    migrated(two, vm, one.name, "--copy-storage", "none")
    assert rows(one, "SELECT v.path FROM volumes v JOIN disks d ON d.pool = v.pool AND "
                "d.volume = v.name WHERE d.vm = ?", vm) == [(path,)]
    assert rows(two, "SELECT name FROM volumes WHERE pool = ?", SHARED) == []


def test_an_abort_during_the_copy_leaves_the_vm_where_it_was(
    lab: Lab, hosts: tuple[LabHost, LabHost], vm: str, tmp_path: Path
) -> None:
    one, two = hosts
    reference = make_vm(one, vm, data_mib=48, reference=tmp_path / "vda.raw")
    assert reference is not None
    volumes = volumes_of(one, vm)
    started = one.json("vm", "migrate", vm, "--to", two.name, "--bandwidth", "1M")
    job_id = started["id"]

    def copying() -> bool:
        job = job_of(one, job_id)
        progress = job.get("progress") or {}
        return bool(job["phase"] == "migrating" and progress.get("disk_processed", 0) > 0)

    wait_for(copying, "the copy to start")
    aborted = one.json("job", "abort", job_id)
    assert aborted["abort_requested"]
    ended = wait_ended(one, job_id)
    assert ended["phase"] == "aborted" and ended["outcome"] == "aborted", ended
    assert ended["error"]
    assert_holds(lab, one, vm)
    assert_gone(lab, two, vm, volumes)
    assert rows(two, "SELECT phase FROM migrations WHERE id = ?", job_id) == [("rolled_back",)]
    assert same_content(reference.path, disk_path(lab, one, vm, "vda"))
    # an ended migration is not aborted again
    again = one.cli("job", "abort", job_id)
    assert again.returncode == 2 and "job.invalid_request" in again.stderr


def refused(host: LabHost, vm: str, to: str, *args: str) -> str:
    result = migrate(host, vm, to, *args)
    assert result.returncode in (2, 3), (result.returncode, result.stdout, result.stderr)
    return result.stderr


def test_each_refusal_changes_nothing_on_either_host(
    lab: Lab, hosts: tuple[LabHost, LabHost], vm: str
) -> None:
    one, two = hosts
    make_vm(one, vm, data_mib=0)
    before = snapshot_of(one, two, vm)

    # a pool the destination does not have
    assert "pool.not_found" in refused(one, vm, two.name, "--pool-map", f"{FAST}=nowhere")
    nothing_changed(lab, one, two, vm, before)
    # too little room there
    if "tiny" not in {p["name"] for p in two.json("pool", "list")}:
        two.ok("pool", "create", "tiny", "--type", "loop", "--capacity", "32M")
    assert "pool.full" in refused(one, vm, two.name, "--pool-map", f"{FAST}=tiny")
    nothing_changed(lab, one, two, vm, before)
    # a thin disk for a pool that cannot grow it
    assert "migration.pool_unsuitable" in refused(one, vm, two.name, "--pool-map",
                                                  f"{FAST}={SHARED}")
    # storage that is not shared, with nothing to be copied
    assert "migration.not_shared" in refused(one, vm, two.name, "--copy-storage", "none")
    nothing_changed(lab, one, two, vm, before)
    # a block job on one of its disks
    copy = one.json("copy", vm, "vdb", "--pool", FAST, "--bandwidth", "1M")
    try:
        assert "job.busy" in refused(one, vm, two.name)
    finally:
        one.ok("job", "abort", copy["id"])
        wait_for(lambda: job_of(one, copy["id"])["phase"] in ("aborted", "done", "failed"),
                 "the copy to end")
        for leftover in rows(one, "SELECT name FROM volumes WHERE name LIKE ?",
                             f"{vm}-vdb-copy-%"):
            one.ok("volume", "delete", FAST, leftover[0])
    nothing_changed(lab, one, two, vm, before)
    # a peer nobody added
    assert "peer.not_found" in refused(one, vm, "host9")
    nothing_changed(lab, one, two, vm, before)


def test_a_snapshot_being_taken_is_refused(
    lab: Lab, hosts: tuple[LabHost, LabHost], vm: str
) -> None:
    one, two = hosts
    make_vm(one, vm, data_mib=0, throttled=False)
    before = snapshot_of(one, two, vm)
    restart_agent(lab, one, "snapshot.after_overlays=sleep:8")
    try:
        argv, environment = lab_argv(lab, one)
        snapshot = subprocess.Popen(
            [*argv, "snapshot", "create", vm, "--name", "during"], env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: bool(rows(one, "SELECT name FROM chain_snapshots WHERE vm = ? AND "
                                   "state = 'creating'", vm)), "the snapshot to start")
        assert "snapshot.in_progress" in refused(one, vm, two.name)
        assert snapshot.wait(timeout=120) == 0, snapshot.stderr.read() if snapshot.stderr else ""
    finally:
        restart_agent(lab, one)
    assert rows(one, "SELECT id FROM migrations") == before["source_migrations"]
    assert snapshot_of(one, two, vm)["destination_volumes"] == before["destination_volumes"]


def lab_argv(lab: Lab, host: LabHost) -> tuple[list[str], dict[str, str]]:
    return host_command(load(lab.dir), host.name, [sys.executable, "-m", "blockplane"])


def test_a_destination_that_cannot_receive_is_refused(
    lab: Lab, hosts: tuple[LabHost, LabHost], vm: str
) -> None:
    one, two = hosts
    make_vm(one, vm, data_mib=0)
    before = snapshot_of(one, two, vm)
    tls = two.home_dir.parent / "tls"
    two.ok("agent", "stop")
    try:
        two.ok("agent", "start", "--listen", f"{two.address}:8640", "--tls-cert",
               str(tls / "agent.pem"), "--tls-key", str(tls / "agent.key"))
        # no --migration-uri, and no address outside loopback to derive one from
        assert "migration.destination_unsupported" in refused(one, vm, two.name)
    finally:
        two.cli("agent", "stop")  # not the lab's: `lab restart` would leave it running
        restart_agent(lab, two)
    nothing_changed(lab, one, two, vm, before)


@pytest.mark.parametrize("broken", ["token", "ca"])
def test_a_wrong_token_or_ca_is_refused_with_its_code(
    lab: Lab, hosts: tuple[LabHost, LabHost], vm: str, broken: str, tmp_path: Path
) -> None:
    one, two = hosts
    make_vm(one, vm, data_mib=0)
    before = snapshot_of(one, two, vm)
    database = one.home_dir / "state.db"
    (token, ca) = rows(one, "SELECT token, ca_pem FROM peers WHERE name = ?", two.name)[0]
    if broken == "token":
        column, value, code = "token", "not-the-token", "peer.auth"
    else:
        rogue = tmp_path / "rogue"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=rogue",
                        "-keyout", f"{rogue}.key", "-out", f"{rogue}.pem"],
                       check=True, capture_output=True)
        column, value, code = "ca_pem", Path(f"{rogue}.pem").read_text(), "peer.tls"
    _set_peer(database, column, value, two.name)
    try:
        stderr = refused(one, vm, two.name)
        assert code in stderr and "not-the-token" not in stderr
    finally:
        _set_peer(database, "token", token, two.name)
        _set_peer(database, "ca_pem", ca, two.name)
    nothing_changed(lab, one, two, vm, before)


def _set_peer(database: Path, column: str, value: str, peer: str) -> None:
    assert column in ("token", "ca_pem")
    with sqlite3.connect(database, timeout=10) as connection:
        connection.execute(f"UPDATE peers SET {column} = ? WHERE name = ?", (value, peer))


def test_job_list_shows_migrations_beside_block_jobs(
    hosts: tuple[LabHost, LabHost], vm: str
) -> None:
    one, two = hosts
    make_vm(one, vm, data_mib=0)
    job = migrated(one, vm, two.name)
    listed = {j["id"]: j for j in one.json("job", "list")}
    assert listed[job["id"]]["kind"] == "migrate"
    shown = one.json("job", "show", job["id"])
    assert shown["spec"]["peer"] == two.name and shown["phase"] == "done"
    assert shown["progress"]["cur"] == shown["progress"]["end"]
