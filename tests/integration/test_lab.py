"""The lab (``scripts/lab``) is a real multi-host migration lab: each host its own libvirtd with
its own host UUID, the same pool path holding different files on each host, one shared
directory, and a no-OS VM that live-migrates between two hosts with plain ``virsh migrate
--live --p2p``, both on the shared directory and with ``--copy-storage-all``. ``down`` leaves no
process, namespace, loop device or claim behind, twice in a row and after a killed ``up``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from blockplane.lab import load
from blockplane.lab.claims import CLAIMS_DIR
from blockplane.lab.processes import (
    Recorded,
    from_pid_file,
    in_namespace,
    mount_namespace,
    wait_gone,
)
from blockplane.lab.tls import make_ca, make_host_certificate
from tests.lab_support import Lab, LabHost, lab_command, lab_dir, start_lab, stop_lab

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def no_os_vm(name: str, disk: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def start_vm(host: LabHost, name: str, disk: Path, tmp_path: Path) -> None:
    xml = tmp_path / f"{name}.xml"
    xml.write_text(no_os_vm(name, disk))
    host.virsh_ok("create", str(xml))


def running_vms(host: LabHost) -> set[str]:
    return set(host.virsh_ok("list", "--name").split())


def qemu_img(*args: str) -> str:
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_each_host_has_its_own_libvirtd_with_its_own_host_uuid(lab: Lab) -> None:
    uuids = []
    for host, shown in zip(lab.hosts, lab.shown()["hosts"], strict=True):
        capabilities = host.virsh_ok("capabilities")
        found = re.search(r"<host>\s*<uuid>([0-9a-f-]+)</uuid>", capabilities)
        assert found, capabilities[:400]
        assert found.group(1) == shown["host_uuid"]
        uuids.append(found.group(1))
        # The daemon lives in the host's namespace, not the machine's.
        assert mount_namespace(shown["libvirtd_pid"]) == mount_namespace(host.ns_pid)
        assert mount_namespace(host.ns_pid) != mount_namespace(os.getpid())
    assert len(set(uuids)) == len(lab.hosts)


def test_the_same_pool_path_holds_different_files_on_each_host(lab: Lab) -> None:
    probe = "/var/lib/blockplane/pools/lab-probe/which-host"
    for host in lab.hosts:
        result = host.run("sh", "-c", f'mkdir -p "${{0%/*}}" && echo {host.name} > "$0"', probe)
        assert result.returncode == 0, result.stderr
    for host in lab.hosts:
        assert host.run("cat", probe).stdout.strip() == host.name
        assert (host.home_dir / "pools/lab-probe/which-host").read_text().strip() == host.name
    # ... and none of it is the machine's own /var/lib/blockplane.
    assert not Path(probe).exists()


def test_the_shared_directory_is_the_same_files_on_every_host(lab: Lab) -> None:
    first, second = lab.hosts[0], lab.hosts[1]
    marker = f"shared-{uuid.uuid4().hex}"
    assert first.run("sh", "-c", f'echo {marker} > "$0"', str(lab.shared / marker)).returncode == 0
    assert second.run("cat", str(lab.shared / marker)).stdout.strip() == marker
    assert (lab.shared_dir / marker).read_text().strip() == marker


def test_every_host_sees_the_test_guest_images(lab: Lab) -> None:
    images = Path(lab.view["images"])
    if not images.is_dir():
        pytest.skip(f"no test guest built in {images}")
    expected = sorted(path.name for path in images.iterdir())
    for host in lab.hosts:
        listing = host.run("sh", "-c", 'ls -A "$BLOCKPLANE_IMAGES"')
        assert sorted(listing.stdout.split()) == expected


def test_exec_runs_inside_the_host_with_its_environment_and_status(lab: Lab) -> None:
    result = subprocess.run(
        [str(REPO / "scripts/lab"), "exec", "--dir", str(lab.dir), "host2", "--",
         "sh", "-c", 'echo "$BLOCKPLANE_HOME $BLOCKPLANE_LIBVIRT_URI"; printf %s "$0"; exit 7',
         "a;b $(c)"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    assert result.stdout == "/var/lib/blockplane qemu:///system\na;b $(c)"
    unknown = lab_command("exec", "--dir", str(lab.dir), "host9", "--", "true")
    assert unknown.returncode == 2
    assert "lab.host_not_found" in unknown.stderr


def test_a_vm_on_the_shared_directory_live_migrates_without_a_copy(
    lab: Lab, tmp_path: Path
) -> None:
    first, second = lab.hosts[0], lab.hosts[1]
    name = "lab-shared"
    qemu_img("create", "-f", "qcow2", str(lab.shared_dir / f"{name}.qcow2"), "64M")
    start_vm(first, name, lab.shared / f"{name}.qcow2", tmp_path)
    try:
        first.virsh_ok("migrate", "--live", "--p2p", name, second.libvirt_uri)
        assert name in running_vms(second)
        assert name not in running_vms(first)
        second.virsh_ok("migrate", "--live", "--p2p", name, first.libvirt_uri)
        assert name in running_vms(first)
        assert name not in running_vms(second)
    finally:
        for host in lab.hosts:
            host.virsh("destroy", name)


def test_a_vm_live_migrates_with_copy_storage_all(lab: Lab, tmp_path: Path) -> None:
    first, second = lab.hosts[0], lab.hosts[1]
    name = "lab-copy"
    inside = Path("/var/lib/blockplane/pools/lab-copy") / f"{name}.qcow2"
    for host in (first, second):
        directory = host.home_dir / "pools/lab-copy"
        directory.mkdir(mode=0o711, parents=True, exist_ok=True)
        qemu_img("create", "-f", "qcow2", str(directory / inside.name), "64M")
    source = first.home_dir / "pools/lab-copy" / inside.name
    destination = second.home_dir / "pools/lab-copy" / inside.name
    written = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 8M", str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    start_vm(first, name, inside, tmp_path)
    try:
        first.virsh_ok("migrate", "--live", "--p2p", "--copy-storage-all", name,
                       second.libvirt_uri)  # fmt: skip
        assert name in running_vms(second)
        assert name not in running_vms(first)
        assert "identical" in qemu_img("compare", "-U", str(source), str(destination))
    finally:
        for host in lab.hosts:
            host.virsh("destroy", name)


def test_a_killed_libvirtd_restarts_in_its_host(lab: Lab) -> None:
    host = lab.hosts[-1]
    before = load(lab.dir).host(host.name)
    assert before.libvirtd is not None and before.libvirtd.running()
    os.kill(before.libvirtd.pid, signal.SIGKILL)
    assert wait_gone([before.libvirtd], 30) == []
    assert host.virsh("uri").returncode != 0
    host.restart("libvirtd")
    after = load(lab.dir).host(host.name)
    assert after.libvirtd is not None and after.libvirtd != before.libvirtd
    assert mount_namespace(after.libvirtd.pid) == before.namespace
    assert before.host_uuid in host.virsh_ok("capabilities")


def test_a_second_lab_on_the_same_addresses_is_refused(lab: Lab) -> None:
    other = lab_dir()
    result = lab_command("up", "--dir", str(other), "--no-agents",
                         "--base-address", lab.view["base_address"])  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "lab.address_in_use" in result.stderr
    assert not other.exists()
    assert load(lab.dir).status == "up"


def test_agents_serve_tls_with_their_token_and_are_peers(lab: Lab, tmp_path: Path) -> None:
    first, second = lab.hosts[0], lab.hosts[1]
    with first.http() as client:
        assert client.get("/v1/health").status_code == 200
        assert client.get("/v1/vms").status_code == 200
    with first.http(token=None) as client:
        assert client.get("/v1/vms").status_code == 401
    stranger = make_ca(tmp_path / "other-ca")
    with first.http(ca=stranger.certificate) as client, pytest.raises(httpx.ConnectError):
        client.get("/v1/health")
    for host in lab.hosts:
        peers = {peer["name"] for peer in host.json("peer", "list")}
        assert peers == {other.name for other in lab.hosts if other is not host}
    assert second.token not in (first.home_dir / "agent.log").read_text()


def test_a_host_certificate_verifies_only_for_its_address_and_only_against_the_lab_ca(
    tmp_path: Path,
) -> None:
    ca = make_ca(tmp_path / "ca")
    issued = make_host_certificate(ca, tmp_path / "host1", "host1", "127.0.0.1")
    assert oct(issued.key.stat().st_mode & 0o777) == "0o600"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(issued.certificate),
         "-key", str(issued.key), "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_listening("127.0.0.1", port, server)
        strict = ssl.create_default_context(cafile=str(ca.certificate))
        strict.verify_flags |= ssl.VERIFY_X509_STRICT
        with httpx.Client(verify=strict, timeout=30) as client:
            assert client.get(f"https://127.0.0.1:{port}/").status_code == 200
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                client.get(f"https://localhost:{port}/")  # not a name in the certificate
        other = ssl.create_default_context(cafile=str(make_ca(tmp_path / "other").certificate))
        with httpx.Client(verify=other, timeout=30) as client, pytest.raises(
            httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"
        ):
            client.get(f"https://127.0.0.1:{port}/")
    finally:
        server.terminate()
        server.wait(10)


def wait_until_listening(address: str, port: int, server: subprocess.Popen[bytes]) -> None:
    while server.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex((address, port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"openssl s_server exited {server.returncode}")


def recorded_processes(root: Path) -> tuple[list[Recorded], list[str]]:
    """Every process the state of the lab at ``root`` records, and its hosts' namespaces."""
    state = load(root)
    processes = [
        process
        for host in state.hosts
        for process in (host.holder, host.libvirtd, host.agent)
        if process is not None
    ]
    return processes, [host.namespace for host in state.hosts if host.namespace]


def attached_loops() -> set[tuple[str, str]]:
    listing = subprocess.run(
        ["losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-INO"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {tuple(line.split()[:2]) for line in listing.stdout.splitlines()}  # type: ignore[misc]


def assert_lab_is_gone(
    root: Path, processes: list[Recorded], namespaces: list[str], loops: set[tuple[str, str]]
) -> None:
    assert not root.exists()
    assert processes, "the lab recorded no process to check"
    assert [process for process in processes if process.running()] == []
    for namespace in namespaces:
        # A namespace with no process is gone, and every mount made in it with it.
        assert in_namespace(namespace) == [], f"{namespace} still has processes"
    assert loops.isdisjoint(attached_loops())
    claims = list(CLAIMS_DIR.iterdir()) if CLAIMS_DIR.is_dir() else []
    assert [claim for claim in claims if os.readlink(claim) == str(root)] == []
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mountinfo


def test_down_stops_everything_up_started_and_can_run_twice(tmp_path: Path) -> None:
    root = lab_dir()
    try:
        lab = start_lab(root, agents=False)
        first = lab.hosts[0]
        qemu_img("create", "-f", "qcow2", str(lab.shared_dir / "down.qcow2"), "64M")
        start_vm(first, "lab-down", lab.shared / "down.qcow2", tmp_path)
        attached = first.run("sh", "-c", 'truncate -s 16M "$0" && losetup --find --show "$0"',
                             "/var/lib/blockplane/loop-backing")  # fmt: skip
        assert attached.returncode == 0, attached.stderr
        device = attached.stdout.strip()
        loops = {pair for pair in attached_loops() if pair[0] == device}
        assert len(loops) == 1
        processes, namespaces = recorded_processes(root)
        assert all(process.running() for process in processes)
    except BaseException:
        stop_lab(root)
        raise
    report = stop_lab(root)
    assert report["removed"] is True
    assert report["vms_destroyed"] == ["host1/lab-down"]
    assert report["loop_devices"] == [device]
    assert_lab_is_gone(root, processes, namespaces, loops)
    again = stop_lab(root)
    assert again["found"] is False


def test_down_ends_the_vms_of_a_killed_libvirtd(tmp_path: Path) -> None:
    root = lab_dir()
    try:
        lab = start_lab(root, agents=False)
        first = lab.hosts[0]
        qemu_img("create", "-f", "qcow2", str(lab.shared_dir / "orphan.qcow2"), "64M")
        start_vm(first, "lab-orphan", lab.shared / "orphan.qcow2", tmp_path)
        run_dir = load(root).hosts[0].layout.libvirt_dir("run")  # the host's /run/libvirt
        qemu = from_pid_file(run_dir / "qemu" / "lab-orphan.pid")
        assert qemu is not None
        processes, namespaces = recorded_processes(root)
        libvirtd = load(root).hosts[0].libvirtd
        assert libvirtd is not None
        os.kill(libvirtd.pid, signal.SIGKILL)
        assert wait_gone([libvirtd], 30) == []
        assert qemu.running()  # QEMU outlives its daemon, as on a real host
    except BaseException:
        stop_lab(root)
        raise
    report = stop_lab(root)
    assert report["vms_destroyed"] == []
    assert qemu.pid in report["stopped"]
    assert_lab_is_gone(root, [*processes, qemu], namespaces, set())


@pytest.mark.parametrize("failpoint", ["lab.after_mounts", "lab.after_libvirtd"])
def test_down_cleans_up_after_a_killed_up(failpoint: str) -> None:
    root = lab_dir()
    killed = lab_command(
        "up", "--dir", str(root), "--no-agents", "--base-address", "auto",
        env={**os.environ, "BLOCKPLANE_FAILPOINTS": failpoint},
    )  # fmt: skip
    try:
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        processes, namespaces = recorded_processes(root)
        assert load(root).status == "starting"
        assert namespaces and all(in_namespace(namespace) for namespace in namespaces)
    finally:
        report = stop_lab(root)
    assert report["removed"] is True
    assert_lab_is_gone(root, processes, namespaces, set())
