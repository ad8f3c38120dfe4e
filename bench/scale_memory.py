"""Where the agent's resident memory goes on a full host: a heap profile at 100 VMs x 4 disks.

Serves a throwaway home from an ``Agent`` inside this process (as the scale bench's burst phase
does) with ``tracemalloc`` on, creates the VMs and disks of ``bench.scale`` through the API, and
reports at 0 VMs, after creating them and after a minute idle: the process's RSS split by kind
of mapping (``/proc/self/smaps``: the main heap, other anonymous memory such as glibc's thread
arenas and Python's own arenas, libraries), what Python itself holds (``tracemalloc``: the
biggest allocation sites by file and line, and by module), and what ``malloc_trim`` gives back.
Python's share is what tracemalloc traces; the rest of the anonymous memory is C allocations
(embedded libvirt, the SQLite page cache) and allocator residue. The client side of this
process (httpx) is small and shows separately in the per-module list.

    python -m bench.scale_memory [--vms 100] [--idle-s 60] [--frames 12]

Writes ``bench/out/scale_memory.json``. A diagnosis tool, not a benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import save, tmpfs_dir
from bench.scale import teardown
from bench.scale_api import Api
from bench.scale_burst import agent_in_process
from bench.scale_phases import create_all, create_pool
from blockplane.cli.client import start_agent
from blockplane.config import load_settings

MIB = 2**20


def smaps_breakdown() -> dict[str, int]:
    """Resident bytes of this process by kind of mapping."""
    kinds: dict[str, int] = defaultdict(int)
    kind = "other"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            name = fields[5] if len(fields) > 5 else ""
            if name == "[heap]":
                kind = "heap (brk: main arena)"
            elif name.startswith("[stack"):
                kind = "main stack"
            elif name == "":
                kind = "anonymous mmaps (thread arenas, Python arenas, stacks)"
            elif ".so" in name or name.endswith((".so", ".py", ".pyc")):
                kind = "libraries (file-backed)"
            else:
                kind = "other files"
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1]) * 1024
    return dict(kinds)


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def malloc_trim() -> int:
    """RSS freed by glibc's ``malloc_trim(0)``."""
    before = rss()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return before - rss()


def python_heap(frames: int) -> dict[str, Any]:
    snapshot = tracemalloc.take_snapshot()
    stats = snapshot.statistics("lineno")
    by_module: dict[str, int] = defaultdict(int)
    for stat in stats:
        filename = stat.traceback[0].filename
        marker = "site-packages/"
        module = (filename.split(marker, 1)[1].split("/", 1)[0] if marker in filename
                  else "blockplane/" + filename.split("blockplane/", 1)[1]
                  if "/blockplane/" in filename else filename.rsplit("/", 2)[-1])
        by_module[module] += stat.size
    top_tracebacks = snapshot.statistics("traceback")[:frames]
    return {
        "traced_bytes": sum(stat.size for stat in stats),
        "top_lines": [(str(stat.traceback[0]), stat.size, stat.count) for stat in stats[:40]],
        "by_module": sorted(by_module.items(), key=lambda item: -item[1])[:25],
        "top_tracebacks": [
            {"size": stat.size, "count": stat.count,
             "frames": [str(frame) for frame in stat.traceback[-frames:]]}
            for stat in top_tracebacks
        ],
    }


def point(label: str, frames: int) -> dict[str, Any]:
    sample = {"label": label, "rss": rss(), "smaps": smaps_breakdown(),
              "python": python_heap(frames)}
    traced = sample["python"]["traced_bytes"]
    print(f"{label}: RSS {sample['rss'] / MIB:.1f} MiB, Python traced {traced / MIB:.1f} MiB")
    for kind, size in sorted(sample["smaps"].items(), key=lambda item: -item[1]):
        print(f"    {kind}: {size / MIB:.1f} MiB")
    for module, size in sample["python"]["by_module"][:12]:
        print(f"    python {module}: {size / MIB:.2f} MiB")
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=12)
    arguments = parser.parse_args()
    tracemalloc.start(arguments.frames)
    home = Path(tempfile.mkdtemp(prefix="bp-mem-", dir="/tmp"))
    pool_dir = tmpfs_dir("bp-mem-pool")
    settings = load_settings(home=home)
    start_agent(settings)  # makes the home; then this process takes it over
    api = Api(settings)
    points: list[dict[str, Any]] = []
    try:
        with agent_in_process(settings, api):
            points.append(point("0 VMs, agent up", arguments.frames))
            create_pool(api, pool_dir)
            create_all(api, arguments.vms, 2, home, print)
            points.append(point(f"{arguments.vms} VMs created", arguments.frames))
            api.call("GET", "/v1/top", window=0.5)
            api.call("GET", "/v1/metrics")
            time.sleep(arguments.idle_s)
            points.append(point(f"{arguments.vms} VMs, after {arguments.idle_s:.0f} s idle "
                                "(and a top frame, a scrape)", arguments.frames))
            trimmed = malloc_trim()
            print(f"malloc_trim(0) gave back {trimmed / MIB:.1f} MiB")
            points.append(point("after malloc_trim(0)", arguments.frames))
            teardown(api)
    finally:
        shutil.rmtree(pool_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    print(f"saved {save('scale_memory', {'points': points, 'pid': os.getpid()})}")


if __name__ == "__main__":
    main()
