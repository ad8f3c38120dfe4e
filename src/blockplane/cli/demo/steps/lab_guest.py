"""Step 7's writing guest: the Linux test guest booted on a lab host (in the background, while
the steps before run), driven through that host agent's guest exec, as the single-host steps
drive theirs. A write loop in the guest stamps 1 MiB chunks (``patterns.stamp``) through to its
disk at a steady pace while the VM live-migrates; after the hop the loop is stopped and the
figures say how much it wrote during the hop, its I/O errors, and the checksum of every chunk it
wrote as the guest reads it and as the destination's volume holds it.

Owns the guest's shell commands (busybox) and the figures of the data; the hop's own figures are
``steps.migration``'s. Must not import services or libvirt: the lab's agents are its only way in.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from blockplane.cli.client import CLIError, api_path
from blockplane.cli.demo.figures import Figure, at_least, equal, exactly, measured
from blockplane.cli.demo.lab_hosts import LabAgent, TourLab
from blockplane.cli.demo.patterns import CHUNK_FILL, guest_checksum, stamped_chunks_checksum
from blockplane.cli.demo.session import BOOTING_CODES, SLOW_BOOT_S, TourFailure, TourSession
from blockplane.cli.demo.steps.migration import Placement, content_checksum, migrate

VCPUS = 2
MEMORY = "384M"
#: The lab pool's thin growth step: the chunks written over both hops outgrow the first one.
POOL_CHUNK = "64M"
#: The guest's pace: one chunk, then this pause (a steady few MiB/s that a TCG guest keeps up).
WRITE_PAUSE_S = 0.25
#: The loop stops by itself after this many chunks, well inside the 256 MiB disk.
MAX_CHUNKS = 200
#: Chunks written before a hop starts, so the hop moves a guest that is writing.
WRITES_BEFORE_HOP = 2
WRITER_WAIT_S = 60.0
LAST, STOP, DONE, ERRORS = "/tmp/w.last", "/tmp/w.stop", "/tmp/w.done", "/tmp/w.err"


@dataclass(frozen=True)
class LabGuest:
    name: str
    pool: str
    host: str
    boot_seconds: float


def boot(lab: TourLab, vm: str, pool: str) -> LabGuest:
    """The same loop pool on every host (its own files on each), then the VM on the first host,
    booted to its guest agent. Runs in the lab's thread: it narrates nothing."""
    for host in lab.hosts:
        host.request("POST", "/v1/pools", {"name": pool, "type": "loop", "chunk": POOL_CHUNK})
    source = lab.hosts[0]
    started = time.monotonic()
    try:
        source.request("POST", "/v1/vms", {"name": vm, "vcpus": VCPUS, "memory": MEMORY,
                                           "guest": "linux", "start": True})
    except CLIError as error:
        if error.code != "guest.boot_timeout":
            raise
        _wait_for_slow_boot(source, vm, started)
    return LabGuest(vm, pool, source.name, time.monotonic() - started)


def _wait_for_slow_boot(host: LabAgent, vm: str, started: float) -> None:
    """The agent stops waiting for the guest agent after a while; the VM keeps booting."""
    while True:
        try:
            run(host, vm, "true", timeout=10)
            return
        except CLIError as error:
            if time.monotonic() > started + SLOW_BOOT_S or error.code not in BOOTING_CODES:
                raise TourFailure(f"the guest of {vm} on {host.name} did not answer within "
                                  f"{time.monotonic() - started:.0f} s: {error.message}"
                                  ) from error
        time.sleep(1.0)


def run(host: LabAgent, vm: str, script: str, timeout: float = 60) -> str:
    """The guest's shell runs ``script`` (through ``host``'s agent); its stdout."""
    answer = host.request("POST", api_path("vms", vm, "exec"),
                          {"argv": ["/bin/sh", "-c", script], "timeout": timeout})
    stdout = base64.b64decode(answer["stdout_base64"]).decode(errors="replace")
    if int(answer["exit_code"]) != 0:
        stderr = base64.b64decode(answer.get("stderr_base64") or "").decode(errors="replace")
        raise TourFailure(f"in the guest on {host.name}, `{script[:120]}` exited "
                          f"{answer['exit_code']}: {(stderr or stdout).strip()[-400:]}")
    return stdout


def wait_for_devices(host: LabAgent, vm: str, devices: list[str]) -> None:
    test = " && ".join(f"test -b {device}" for device in devices)
    deadline = time.monotonic() + 30
    while run(host, vm, f"{test} && echo yes || true").strip() != "yes":
        if time.monotonic() > deadline:
            raise TourFailure(f"{', '.join(devices)} never appeared in the guest of {vm}")
        time.sleep(0.3)


def start_writer(host: LabAgent, vm: str, device: str, first: int) -> None:
    run(host, vm, writer_script(device, first))


def writer_script(device: str, first: int) -> str:
    """The guest's write loop, in the background: chunk ``i`` stamped in a staged 1 MiB file,
    written at ``i`` MiB with O_DIRECT and an fsync, ``LAST`` replaced (a rename: never read
    half written), a pause, the next."""
    staged = "/tmp/w.chunk"
    return (f"rm -f {STOP} {DONE}; echo {first - 1} > {LAST}; dd if=/dev/zero bs=1M count=1 "
            f"2>/dev/null | tr '\\000' '{CHUNK_FILL}' > {staged} && ( i={first}; "
            f"while [ ! -e {STOP} ] && [ $i -lt {MAX_CHUNKS} ]; do "
            f"printf 'bp-%06d\\n' $i | dd of={staged} conv=notrunc 2>/dev/null && "
            f"dd if={staged} of={device} bs=1M seek=$i count=1 oflag=direct conv=notrunc,fsync "
            f"2>/dev/null || echo $i >> {ERRORS}; echo $i > {LAST}.new; mv {LAST}.new {LAST}; "
            f"i=$((i+1)); sleep {WRITE_PAUSE_S}; done; touch {DONE} ) >/dev/null 2>&1 &")


def last_written(host: LabAgent, vm: str) -> int:
    return int(run(host, vm, f"cat {LAST}").strip())


def wait_for_writes(host: LabAgent, vm: str, at_least_index: int) -> int:
    deadline = time.monotonic() + WRITER_WAIT_S
    while (last := last_written(host, vm)) < at_least_index:
        if time.monotonic() > deadline:
            raise TourFailure(f"the guest of {vm} wrote no chunk {at_least_index} within "
                              f"{WRITER_WAIT_S:.0f} s (last {last})")
        time.sleep(0.3)
    return last


def stop_writer(host: LabAgent, vm: str) -> int:
    """Stop the loop after the chunk it is writing; the last chunk written."""
    return int(run(host, vm, f"touch {STOP}; while [ ! -e {DONE} ]; do sleep 0.1; done; "
                             f"cat {LAST}").strip())


def io_errors(host: LabAgent, vm: str) -> int:
    """Writes the loop saw fail, plus the I/O errors the guest's kernel logged."""
    return int(run(host, vm, f"echo $(( $(cat {ERRORS} 2>/dev/null | wc -l) + "
                             "$(dmesg | grep -ci 'i/o error') ))").strip())


def writing_hop(tour: TourSession, source: LabAgent, destination: LabAgent, vm: str,
                device: str, before: Placement, first: int) -> tuple[list[Figure], int]:
    """Start the writer at chunk ``first``, migrate while it writes, stop it on the
    destination, then check every chunk written so far; the figures and the next chunk."""
    hop, where = f"{source.name} -> {destination.name}", f"on {destination.name}"
    target = device.rsplit("/", 1)[-1]
    start_writer(source, vm, device, first)
    at_start = wait_for_writes(source, vm, first + WRITES_BEFORE_HOP - 1)
    started = time.monotonic()
    figures = migrate(tour, source, destination, vm, before)
    at_end = last_written(destination, vm)
    seconds = time.monotonic() - started
    last = stop_writer(destination, vm)
    errors = io_errors(destination, vm)
    during = at_end - at_start
    tour.narrator.say(f"{hop}: the guest wrote chunks {first}-{at_start} before the hop, "
                      f"{during} MiB during it ({during / seconds:.1f} MiB/s), "
                      f"{last - at_end} more before it stopped; {errors} I/O errors")
    chunks = last + 1
    expected = stamped_chunks_checksum(chunks)
    in_guest = run(destination, vm, guest_checksum(device, chunks), timeout=120).strip()
    on_host = content_checksum(destination, vm, target, chunks)
    thin = destination.request("GET", "/v1/thin", vm=vm)
    pauses = sum(int(row.get("pauses", 0)) for row in thin)
    tour.narrator.say(f"{destination.name}: sha256 of {target}'s {chunks} MiB written: guest "
                      f"{in_guest[:16]}…, volume {on_host[:16]}…, chunks rebuilt here "
                      f"{expected[:16]}…")
    basis = f"chunks 0-{last} as stamped, rebuilt here"
    figures += [
        at_least(f"MiB the guest wrote during {hop}", during, 1, "MiB",
                 "its write loop, read before and after the job"),
        measured(f"guest write rate during {hop}", during / seconds, "MiB/s"),
        exactly(f"guest I/O errors after {hop}", errors, 0,
                basis="failed writes + the kernel's I/O errors"),
        exactly(f"thin pauses {where}", pauses, 0, basis="thin status"),
        equal(f"guest checksum of {target} {where}", in_guest, expected, basis),
        equal(f"checksum of {target} {where}", on_host, expected,
              f"the volume read with qemu-img; {basis}"),
    ]
    return figures, chunks
