"""Where the agent's resident memory goes on a full host: a heap profile at 100 VMs x 4 disks.

Creates the VMs and disks of ``bench.scale`` through the API and reports, at 0 VMs, after
creating them, after an idle spell and after ``malloc_trim``:

- ``--mode process`` (default): the agent as its own process (as deployed). Its RSS split by
  kind of mapping (``/proc/PID/smaps``: the main heap, other anonymous memory such as glibc's
  thread arenas, Python's arenas and thread stacks, the libraries), and the number of glibc
  arenas in use. ``--env NAME=VALUE`` (repeatable) sets the agent's environment, e.g.
  ``MALLOC_ARENA_MAX=8`` to compare with the agent's own setting.
- ``--mode tracemalloc``: the same ``Agent`` served from inside this process (as the scale
  bench's burst phase does) with ``tracemalloc`` on: what Python itself holds, by module and
  by allocation site. Everything runs several times slower under tracemalloc, and its own
  bookkeeping shows in the RSS: read the Python figures, not the RSS, from this mode.
- ``--mode inprocess``: the same without tracemalloc, the allocator tuned as the agent does it
  (``runtime.memory``), and at each point Python's own allocator statistics
  (``sys._debugmallocstats``: its arenas, and how full they are) and what ``gc.collect`` and
  ``malloc_trim`` give back, to tell Python's fragmentation from the C heap's.

    python -m bench.scale_memory [--vms 100] [--idle-s 30] [--mode process|tracemalloc]

Writes ``bench/out/scale_memory.json`` after each point. A diagnosis tool, not a benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import re
import shutil
import signal
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import force_cleanup, save, tmpfs_dir
from bench.scale import teardown
from bench.scale_api import Api
from bench.scale_burst import agent_in_process
from bench.scale_phases import agent_pid, create_all, create_pool
from blockplane.cli.client import agent_pid as pid_on_file
from blockplane.cli.client import start_agent, stop_agent
from blockplane.config import Settings, load_settings

MIB = 2**20
ANONYMOUS = "anonymous (glibc arenas, Python arenas, thread stacks)"


def smaps_breakdown(pid: int | str = "self") -> dict[str, int]:
    """Resident bytes of a process by kind of mapping, and its count of 64 MiB arena heaps."""
    kinds: dict[str, int] = defaultdict(int)
    kind = "other"
    heaps = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", fields[0]):
            start, end = (int(part, 16) for part in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if name == "[heap]":
                kind = "heap (brk: glibc's main arena)"
            elif name.startswith("[stack"):
                kind = "main stack"
            elif name == "":
                kind = ANONYMOUS
                heaps += int(end - start == 64 * MIB)  # a thread arena's reservation
            elif ".so" in name:
                kind = "libraries (file-backed, shared)"
            else:
                kind = "other files"
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1]) * 1024
    kinds["64 MiB arena reservations (count)"] = heaps
    return dict(kinds)


def rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def python_heap(frames: int) -> dict[str, Any]:
    snapshot = tracemalloc.take_snapshot()
    stats = snapshot.statistics("lineno")
    by_module: dict[str, int] = defaultdict(int)
    for stat in stats:
        filename = stat.traceback[0].filename
        if "site-packages/" in filename:
            module = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/blockplane/" in filename:
            module = "blockplane/" + filename.split("/blockplane/", 1)[1]
        else:
            module = filename.rsplit("/", 2)[-1]
        by_module[module] += stat.size
    return {
        "traced_bytes": sum(stat.size for stat in stats),
        "tracemalloc_own_bytes": tracemalloc.get_tracemalloc_memory(),
        "top_lines": [(str(stat.traceback[0]), stat.size, stat.count) for stat in stats[:40]],
        "by_module": sorted(by_module.items(), key=lambda item: -item[1])[:30],
        "top_tracebacks": [
            {"size": stat.size, "count": stat.count,
             "frames": [str(frame) for frame in stat.traceback[-frames:]]}
            for stat in snapshot.statistics("traceback")[:frames]
        ],
    }


class Probe:
    def __init__(self, mode: str, frames: int) -> None:
        self.mode, self.frames = mode, frames
        self.points: list[dict[str, Any]] = []
        self.pid: int | str = "self"

    def point(self, label: str) -> None:
        sample: dict[str, Any] = {"label": label, "rss": rss(self.pid),
                                  "smaps": smaps_breakdown(self.pid)}
        if self.mode == "tracemalloc":
            sample["python"] = python_heap(self.frames)
        if self.mode == "inprocess":
            sample["pymalloc"] = pymalloc_stats()
            sample["glibc"] = mallinfo()
            print(f"    pymalloc: {sample['pymalloc']}")
            print(f"    glibc: { {k: round(v / MIB, 1) for k, v in sample['glibc'].items()} }")
        self.points.append(sample)
        print(f"{label}: RSS {sample['rss'] / MIB:.1f} MiB")
        for kind, size in sorted(sample["smaps"].items(), key=lambda item: -item[1]):
            print(f"    {kind}: {size if 'count' in kind else f'{size / MIB:.1f} MiB'}")
        if "python" in sample:
            python = sample["python"]
            print(f"    Python traced {python['traced_bytes'] / MIB:.1f} MiB (tracemalloc's own "
                  f"{python['tracemalloc_own_bytes'] / MIB:.1f} MiB)")
            for module, size in python["by_module"][:15]:
                print(f"      {module}: {size / MIB:.2f} MiB")
        save("scale_memory", {"mode": self.mode, "points": self.points})


def malloc_trim_self() -> int:
    before = rss()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return before - rss()


@contextlib.contextmanager
def terminated_cleanly() -> Iterator[None]:
    """SIGTERM (``timeout``) unwinds like Ctrl-C, so the VMs are torn down."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_process(probe: Probe, settings: Settings, api: Api, pool_dir: Path,
                arguments: argparse.Namespace) -> None:
    probe.pid = agent_pid(api)
    probe.point("0 VMs")
    create_pool(api, pool_dir)
    create_all(api, arguments.vms, 2, settings.paths.home, print)
    probe.point(f"{arguments.vms} VMs created")
    time.sleep(arguments.idle_s)
    probe.point(f"{arguments.vms} VMs, {arguments.idle_s:.0f} s idle")
    stop_agent(settings)
    api.reset()
    start_agent(settings)
    probe.pid = agent_pid(api)
    time.sleep(arguments.idle_s)
    probe.point(f"{arguments.vms} VMs, restarted agent, {arguments.idle_s:.0f} s idle")


def pymalloc_stats() -> dict[str, int]:
    """Python's small-object allocator: its arenas and how much of them is in use."""
    import sys

    # It writes to the C library's stderr, not to sys.stderr.
    with tempfile.TemporaryFile("w+") as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read()
    wanted = {"arenas allocated current": "arenas", "bytes in allocated blocks": "in_use",
              "bytes in available blocks": "free_blocks", "unused pools": "unused_pools",
              "bytes lost to pool headers": "pool_headers"}
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition("=")
        for label, key in wanted.items():
            if label in name:
                found[key] = int(value.strip().replace(",", ""))
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def mallinfo() -> dict[str, int]:
    """glibc's own count (``mallinfo2``): bytes its arenas hold, in use and free, and mmapped."""
    try:
        call = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    call.restype = _MallInfo2
    info = call()
    return {"arenas_bytes": info.arena, "in_use": info.uordblks, "free": info.fordblks,
            "mmapped": info.hblkhd, "top_releasable": info.keepcost}


def run_in_process(probe: Probe, settings: Settings, api: Api, pool_dir: Path,
                   arguments: argparse.Namespace) -> None:
    if arguments.mode == "tracemalloc":
        tracemalloc.start(arguments.frames)
    else:
        from blockplane.runtime import memory

        memory.tune_allocator()
    with agent_in_process(settings, api):
        probe.point("0 VMs, agent up")
        create_pool(api, pool_dir)
        create_all(api, arguments.vms, 2, settings.paths.home, print)
        probe.point(f"{arguments.vms} VMs created")
        time.sleep(arguments.idle_s)
        probe.point(f"{arguments.vms} VMs, after {arguments.idle_s:.0f} s idle")
        if arguments.mode == "inprocess":
            before = rss()
            gc.collect()
            print(f"gc.collect() gave back {(before - rss()) / MIB:.1f} MiB")
        print(f"malloc_trim(0) gave back {malloc_trim_self() / MIB:.1f} MiB")
        probe.point("after malloc_trim(0)")
        teardown(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--mode", choices=("process", "tracemalloc", "inprocess"),
                        default="process")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the agent")
    arguments = parser.parse_args()
    for assignment in arguments.env:
        name, _, value = assignment.partition("=")
        os.environ[name] = value  # the agent process inherits it
    home = Path(tempfile.mkdtemp(prefix="bp-mem-", dir="/tmp"))
    pool_dir = tmpfs_dir("bp-mem-pool")
    settings = load_settings(home=home)
    probe = Probe(arguments.mode, arguments.frames)
    with terminated_cleanly():
        start_agent(settings)
        api = Api(settings)
        try:
            if arguments.mode == "process":
                run_process(probe, settings, api, pool_dir, arguments)
            else:
                run_in_process(probe, settings, api, pool_dir, arguments)
        finally:
            with contextlib.suppress(Exception):
                if pid_on_file(settings) is None:  # the in-process agent is gone
                    start_agent(settings)
                    api.reset()
                teardown(api)
            with contextlib.suppress(Exception):
                stop_agent(settings)
            for action in force_cleanup(home, pool_dir):
                print(f"cleanup: {action}")
            shutil.rmtree(pool_dir, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
