"""One run of the tour: the agent's client, the ledger, and the throwaway stage the steps share.

The stage is one loop pool and one 4-vCPU VM booting the Linux test guest, made when the first
step needs them (one boot for every single-host step; ``--step facts`` boots nothing). Every
name carries the run's id, and each is written into the ledger before it is created. The tour
is a client of the agent's API like any platform: it must not import services.
"""

from __future__ import annotations

import base64
import secrets
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from blockplane.cli.client import AgentClient, CLIError, api_path
from blockplane.cli.demo.ledger import Ledger
from blockplane.cli.demo.narrator import Narrator

MIB = 1 << 20
GIB = 1 << 30
#: The stage: a 4-vCPU guest, so a disk's 4 queues are one per vCPU; a loop pool whose thin
#: volumes grow by 256 MiB once a fifth of the last chunk is used: the 205 MiB left then give
#: the extend more than a second against a TCG guest writing flat out on a busy host (with
#: 128 MiB chunks, a loaded host paused the guest now and then).
VCPUS = 4
MEMORY = "512M"
CHUNK = "256M"
UTILIZATION_PCT = 20
TERMINAL_PHASES = ("done", "failed", "aborted")
DEVICE_WAIT_S = 30.0
#: How long the tour waits for the guest to boot in all (the agent itself gives up sooner).
SLOW_BOOT_S = 240.0
#: What a guest exec answers while the guest agent is not up yet.
BOOTING_CODES = ("guest.agent_unavailable", "timeout.guest_agent", "guest.boot_timeout")


class Background(Protocol):
    """Something a step started ahead of time (the lab), which the clean-up waits for."""

    @property
    def done(self) -> bool: ...

    def wait(self) -> None: ...


class TourFailure(Exception):
    """A step could not show what it set out to show; the message says what happened."""


@dataclass(frozen=True)
class ExecResult:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Pool:
    name: str
    path: str
    chunk_bytes: int
    utilization_pct: int


@dataclass(frozen=True)
class Guest:
    name: str
    vcpus: int
    memory_bytes: int
    boot_seconds: float


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) until the block ends: a create the agent is carrying out
    finishes, so the clean-up finds what it made instead of racing it."""
    pending: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {number: signal.signal(number, hold) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if pending:
            raise KeyboardInterrupt


@dataclass
class TourSession:
    client: AgentClient
    narrator: Narrator
    ledger: Ledger
    run_id: str
    setup_did: list[str] = field(default_factory=list)
    setup_seconds: float = 0.0
    _pool: Pool | None = None
    _guest: Guest | None = None
    _facts: dict[str, Any] | None = None
    #: What steps started ahead of time, by name (a later step picks it up; the clean-up waits).
    background: dict[str, Background] = field(default_factory=dict)
    #: Why the stage could not be made: later steps fail at once with it instead of retrying.
    stage_failure: str = ""

    # -- the agent's API ---------------------------------------------------------------------
    def get(self, *segments: str, **params: Any) -> Any:
        return self.client.request("GET", api_path(*segments), **params)

    def post(self, *segments: str, body: Any = None, timeout_s: float | None = None) -> Any:
        return self.client.request("POST", api_path(*segments), body, timeout_s=timeout_s)

    def put(self, *segments: str, body: Any = None) -> Any:
        return self.client.request("PUT", api_path(*segments), body)

    def text(self, *segments: str) -> str:
        return self.client.text(api_path(*segments))

    def facts(self) -> dict[str, Any]:
        if self._facts is None:
            self._facts = self.client.request("GET", "/v1/facts")
        return self._facts

    def name(self, what: str) -> str:
        return f"demo-{self.run_id}-{what}" if what else f"demo-{self.run_id}"

    # -- the stage ---------------------------------------------------------------------------
    def _timed_setup(self, action: Callable[[], str]) -> None:
        if self.stage_failure:
            raise TourFailure(f"no stage to run on: {self.stage_failure}")
        started = time.monotonic()
        try:
            did = action()
        except CLIError as error:
            self.stage_failure = error.message + (f" [{error.code}]" if error.code else "")
            raise
        except TourFailure as error:
            self.stage_failure = str(error)
            raise
        finally:
            self.setup_seconds += time.monotonic() - started
        self.setup_did.append(did)

    def pool(self) -> Pool:
        if self._pool is None:
            self._timed_setup(self._make_pool)
        assert self._pool is not None
        return self._pool

    def _make_pool(self) -> str:
        name = self.name("")
        self.ledger.record("pools", name)
        with deferred_interrupt():
            answer = self.client.request("POST", "/v1/pools", {
                "name": name, "type": "loop", "chunk": CHUNK, "utilization": UTILIZATION_PCT})
        self._pool = Pool(answer["name"], answer["path"], int(answer["chunk_bytes"]),
                          int(answer["utilization_pct"]))
        text = (f"loop pool {self._pool.name}: thin growth by {self._pool.chunk_bytes // MIB} MiB"
                f" chunks at {self._pool.utilization_pct}% of the last one")
        self.narrator.note(f"set-up: {text}")
        return text

    def guest(self) -> Guest:
        if self._guest is None:
            self.pool()
            self._timed_setup(self._make_guest)
        assert self._guest is not None
        return self._guest

    def _make_guest(self) -> str:
        name = self.name("")
        self.ledger.record("vms", name)
        self.narrator.note(f"set-up: booting VM {name} ({VCPUS} vCPUs, {MEMORY}) with the Linux "
                           "test guest ...")
        with deferred_interrupt():
            self.client.request("POST", "/v1/vms", {
                "name": name, "vcpus": VCPUS, "memory": MEMORY, "guest": "linux"})
        started = time.monotonic()
        try:
            vm = self.post("vms", name, "start", timeout_s=300)
        except CLIError as error:
            if error.code != "guest.boot_timeout":
                raise
            vm = self._wait_for_slow_boot(name, error.message, started)
        seconds = time.monotonic() - started
        self._guest = Guest(vm["name"], int(vm["vcpus"]), int(vm["memory_bytes"]), seconds)
        accel = self.facts()["accel"]["selected"]
        text = (f"VM {name}: {self._guest.vcpus} vCPUs, {self._guest.memory_bytes // MIB} MiB, "
                f"booted to its guest agent in {seconds:.1f} s ({accel})")
        self.narrator.note(f"set-up: {text}")
        return text

    def _wait_for_slow_boot(self, name: str, message: str, started: float) -> dict[str, Any]:
        """The agent stops waiting for the guest agent after a while; the VM keeps booting.
        On a host busy with other work a TCG boot can take longer: keep asking."""
        self.narrator.note(f"set-up: {message}; the VM still boots, waiting longer ...")
        deadline = started + SLOW_BOOT_S
        while True:
            try:
                self.client.request("POST", api_path("vms", name, "exec"),
                                    {"argv": ["true"], "timeout": 10}, timeout_s=20)
                vm: dict[str, Any] = self.get("vms", name)
                return vm
            except CLIError as error:
                if time.monotonic() > deadline or error.code not in BOOTING_CODES:
                    raise TourFailure(f"the guest of {name} did not answer within "
                                      f"{time.monotonic() - started:.0f} s: {error.message}"
                                      ) from error
            time.sleep(1.0)

    def attach(self, body: dict[str, Any]) -> dict[str, Any]:
        """Attach a disk to the guest (in the tour's pool) and wait until the guest sees it."""
        guest = self.guest()
        with deferred_interrupt():
            disk: dict[str, Any] = self.post("vms", guest.name, "disks",
                                             body={"pool": self.pool().name, **body})
        device = f"/dev/{disk['target']}"
        deadline = time.monotonic() + DEVICE_WAIT_S
        while self.run(["/bin/sh", "-c", f"test -b {device}"]).code != 0:
            if time.monotonic() > deadline:
                raise TourFailure(f"{device} never appeared in the guest")
            time.sleep(0.3)
        return disk

    # -- the guest ---------------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float = 120) -> ExecResult:
        answer = self.post("vms", self.guest().name, "exec",
                           body={"argv": argv, "timeout": timeout}, timeout_s=timeout + 10)
        return ExecResult(int(answer["exit_code"]), _decoded(answer["stdout_base64"]),
                          _decoded(answer.get("stderr_base64") or ""))

    def run_detached(self, argv: list[str], timeout: float) -> ExecResult:
        """Run ``argv`` in the guest in the background and poll for its end: libvirt refuses
        the guest agent while the VM is paused (a thin volume that filled before its extend),
        so one blocking exec would fail on a pause the agent resumes a moment later."""
        files = f"/tmp/demo-{secrets.token_hex(4)}"
        command = " ".join(shlex.quote(word) for word in argv)
        self.sh(f"rm -f {files}.rc; ( {command} >{files}.out 2>{files}.err; "
                f"echo $? >{files}.rc.tmp; mv {files}.rc.tmp {files}.rc ) >/dev/null 2>&1 &")
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(0.5)
            try:
                done = self.run(["/bin/sh", "-c", f"cat {files}.rc 2>/dev/null"], timeout=30)
            except CLIError:
                done = ExecResult(1, "", "")  # paused now; asked again in a moment
            if done.stdout.strip():
                break
            if time.monotonic() > deadline:
                raise TourFailure(f"`{command}` did not end in the guest within {timeout:.0f} s")
        output = self.sh(f"cat {files}.out; rm -f {files}.out", timeout=30)
        errors = self.sh(f"cat {files}.err; rm -f {files}.err {files}.rc", timeout=30)
        return ExecResult(int(done.stdout.strip()), output, errors)

    def sh(self, script: str, timeout: float = 120) -> str:
        result = self.run(["/bin/sh", "-c", script], timeout)
        if result.code != 0:
            raise TourFailure(f"in the guest, `{script}` exited {result.code}: "
                              f"{(result.stderr or result.stdout).strip()[-400:]}")
        return result.stdout

    # -- block jobs --------------------------------------------------------------------------
    def follow(self, job: dict[str, Any], label: str) -> dict[str, Any]:
        """Follow a job to its end with a progress bar; the ended job (``done`` or a failure)."""
        with self.narrator.progress(label) as bar:
            while job["phase"] not in TERMINAL_PHASES:
                progress = job.get("progress") or {}
                if progress.get("end"):
                    bar.update(float(progress["cur"]) / float(progress["end"]))
                time.sleep(0.2)
                job = self.get("jobs", job["id"])
            if job["phase"] == "done":
                bar.update(1.0)
        if job["phase"] != "done":
            raise TourFailure(f"{label}: job {job['id']} {job['phase']}: {job.get('error')}")
        return job


def _decoded(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")
