"""Boot the blockplane Linux test guest with plain QEMU and drive it through qemu-guest-agent.

No libvirt here: this checks the image built by ``scripts/build-guest.sh`` on its own. The
guest boots under TCG, starts qemu-ga on the virtio-serial port ``org.qemu.guest_agent.0``, and
the test talks the agent's JSON protocol over the chardev's UNIX socket: it writes random data
to a raw virtio-blk disk from inside the guest and checks the guest's sha256 against the
host's view of the same bytes, runs ``fio --version``, and round-trips fsfreeze.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

IMAGES_DIR = Path(os.environ.get("BLOCKPLANE_IMAGES", "/var/lib/blockplane/images"))
READY_MARKER = b"BLOCKPLANE-GUEST-READY"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
DISK_BYTES = 4 * 1024 * 1024
AGENT_TIMEOUT_S = 90.0

JsonObject = dict[str, Any]


class AgentError(RuntimeError):
    """The guest agent answered with an error, or not at all."""


class GuestAgent:
    """A minimal qemu-guest-agent client over a QEMU chardev UNIX socket."""

    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(path))
        self._buffer = b""
        self._next_id = int(time.time()) % 100000 * 1000

    def close(self) -> None:
        self._sock.close()

    def _send(self, message: JsonObject) -> None:
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _receive(self, deadline: float) -> JsonObject | None:
        """Return the next JSON message, or None once the deadline passes."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise AgentError("guest agent socket closed")
            # 0xff is the agent's delimiter byte for guest-sync-delimited; never JSON.
            self._buffer += chunk.replace(b"\xff", b"")
        line, _, self._buffer = self._buffer.partition(b"\n")
        if not line.strip():
            return self._receive(deadline)
        message = json.loads(line)
        if not isinstance(message, dict):
            raise AgentError(f"unexpected agent message: {line!r}")
        return message

    def sync(self, attempt_s: float = 1.0) -> None:
        """One guest-sync round trip; AgentError if no matching answer within attempt_s.

        Requests sent before the guest opened the port wait in the socket and are answered
        in order later, so answers to older sync ids are skipped, not treated as errors.
        """
        self._next_id += 1
        sync_id = self._next_id
        self._send({"execute": "guest-sync", "arguments": {"id": sync_id}})
        deadline = time.monotonic() + attempt_s
        while (message := self._receive(deadline)) is not None:
            if message.get("return") == sync_id:
                return
        raise AgentError("no guest-sync answer")

    def execute(
        self, command: str, arguments: JsonObject | None = None, timeout_s: float = 30.0
    ) -> Any:
        request: JsonObject = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        self._send(request)
        deadline = time.monotonic() + timeout_s
        while (message := self._receive(deadline)) is not None:
            if "error" in message:
                raise AgentError(f"{command}: {message['error']}")
            if "return" in message:
                return message["return"]
        raise AgentError(f"{command}: no answer within {timeout_s} s")

    def run(self, argv: list[str], timeout_s: float = 60.0) -> tuple[int, str, str]:
        """guest-exec argv with captured output; return (exit code, stdout, stderr)."""
        started = self.execute(
            "guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True}
        )
        pid = int(started["pid"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.execute("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
                return int(status.get("exitcode", -1)), out, err
            time.sleep(0.1)
        raise AgentError(f"guest-exec {argv!r} still running after {timeout_s} s")


class Console:
    """Collects the guest's serial console (QEMU's stdout) in a thread."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self._lines: list[bytes] = []
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        for line in iter(stream.readline, b""):
            self._lines.append(line)
            if READY_MARKER in line and not self.ready.is_set():
                self.ready_at = time.monotonic()
                self.ready.set()

    def tail(self, count: int = 40) -> str:
        return b"".join(self._lines[-count:]).decode(errors="replace")

    def join(self) -> None:
        self._thread.join(timeout=5)


def _load_manifest() -> JsonObject:
    manifest_path = IMAGES_DIR / "manifest.json"
    if not manifest_path.is_file():
        pytest.skip(f"no guest image in {IMAGES_DIR}: run scripts/build-guest.sh {IMAGES_DIR}")
    manifest = json.loads(manifest_path.read_text())
    assert isinstance(manifest, dict)
    return manifest


def _qemu_command(manifest: JsonObject, agent_socket: Path, disk: Path) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None, "qemu-system-x86_64 is not installed"
    disk_node = {
        "driver": "raw",
        "node-name": "disk0",
        "file": {"driver": "file", "filename": str(disk)},
    }
    return [
        qemu,
        "-accel", "tcg",
        "-machine", "pc",
        "-m", "512",
        "-smp", "2",
        "-nographic",
        "-nodefaults",
        "-serial", "stdio",
        "-no-reboot",
        "-kernel", str(IMAGES_DIR / "vmlinuz"),
        "-initrd", str(IMAGES_DIR / "initramfs.img"),
        "-append", str(manifest["cmdline"]),
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=qga0,path={agent_socket},server=on,wait=off",
        "-device", f"virtserialport,bus=vser0.0,chardev=qga0,name={AGENT_CHANNEL}",
        "-blockdev", json.dumps(disk_node),
        "-device", "virtio-blk-pci,drive=disk0,id=vda",
    ]  # fmt: skip


def _wait_for_agent(
    process: subprocess.Popen[bytes], agent_socket: Path, console: Console
) -> GuestAgent:
    deadline = time.monotonic() + AGENT_TIMEOUT_S
    while not agent_socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"QEMU made no agent socket (rc={process.poll()}):\n{console.tail()}")
        time.sleep(0.02)
    agent = GuestAgent(agent_socket)
    while True:
        if process.poll() is not None:
            agent.close()
            pytest.fail(
                f"QEMU exited with {process.returncode} before the agent answered:\n"
                f"{console.tail()}"
            )
        if time.monotonic() > deadline:
            agent.close()
            pytest.fail(f"guest agent silent after {AGENT_TIMEOUT_S} s:\n{console.tail()}")
        try:
            agent.sync()
        except AgentError:
            continue
        return agent


def test_guest_boots_and_runs_io_through_agent(tmp_path: Path) -> None:
    manifest = _load_manifest()
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as handle:
        handle.truncate(DISK_BYTES)
    # A short directory of our own: UNIX socket paths are limited to 107 bytes.
    socket_dir = Path(tempfile.mkdtemp(prefix="bp-qga-"))
    agent_socket = socket_dir / "qga.sock"
    command = _qemu_command(manifest, agent_socket, disk)

    agent: GuestAgent | None = None
    started = time.monotonic()
    # Argument list, no shell: every value is ours (manifest, tmp paths).
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    console = Console(process)
    try:
        agent = _wait_for_agent(process, agent_socket, console)
        boot_s = time.monotonic() - started
        assert console.ready.wait(5), f"no {READY_MARKER!r} on the console:\n{console.tail()}"
        assert console.ready_at is not None
        print(
            f"\nguest {manifest.get('kernel_version')}: READY on the console after"
            f" {console.ready_at - started:.2f} s, agent answered after {boot_s:.2f} s"
        )

        assert agent.execute("guest-ping") == {}

        code, out, err = agent.run(["/bin/sh", "-c", "fio --version"])
        assert code == 0, f"fio --version failed: {err}"
        assert out.startswith("fio-"), out

        code, out, err = agent.run(["/bin/sh", "-c", "blockdev --getsize64 /dev/vda"])
        assert code == 0, err
        assert int(out) == DISK_BYTES

        script = (
            f"dd if=/dev/urandom of=/dev/vda bs=1M count={DISK_BYTES // (1024 * 1024)}"
            " oflag=direct 2>/dev/null"
            " && sync && echo 3 > /proc/sys/vm/drop_caches"
            " && sha256sum /dev/vda"
        )
        code, out, err = agent.run(["/bin/sh", "-c", script])
        assert code == 0, f"guest dd/sha256sum failed: {err}"
        guest_sha256 = out.split()[0]
        host_bytes = disk.read_bytes()
        assert len(host_bytes) == DISK_BYTES
        assert host_bytes != bytes(DISK_BYTES), "the guest's writes never reached the disk"
        assert guest_sha256 == hashlib.sha256(host_bytes).hexdigest()

        # A real (tiny) fio job, not just --version: direct libaio I/O against the disk.
        code, out, err = agent.run(
            [
                "fio", "--name=smoke", "--filename=/dev/vda", "--rw=randrw", "--bs=4k",
                "--size=2M", "--ioengine=libaio", "--direct=1", "--iodepth=4",
                "--output-format=json",
            ]
        )  # fmt: skip
        assert code == 0, f"fio job failed: {err}"
        job = json.loads(out)["jobs"][0]
        assert job["error"] == 0
        assert job["write"]["io_kbytes"] > 0 and job["read"]["io_kbytes"] > 0

        # Quiesced snapshots need fsfreeze. With nothing but pseudo file systems mounted the
        # agent freezes nothing and stays thawed, so put a real file system on the disk first.
        code, out, err = agent.run(
            ["/bin/sh", "-c", "mke2fs -q /dev/vda && mount -t ext4 /dev/vda /mnt && echo ok"]
        )
        assert code == 0, f"mke2fs/mount failed: {err}"
        assert agent.execute("guest-fsfreeze-status") == "thawed"
        assert agent.execute("guest-fsfreeze-freeze") == 1
        assert agent.execute("guest-fsfreeze-status") == "frozen"
        assert agent.execute("guest-fsfreeze-thaw") == 1
        assert agent.execute("guest-fsfreeze-status") == "thawed"
    finally:
        if agent is not None:
            agent.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        console.join()
        shutil.rmtree(socket_dir, ignore_errors=True)
