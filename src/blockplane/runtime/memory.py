"""The agent's C heap: glibc's allocator set for a process with one thread per VM, and trimmed.

Most of the agent's resident memory on a full host is not Python's objects but C allocations
and what the allocator keeps of them after they are freed (``bench/scale_memory.py``): embedded
libvirt runs one event thread per VM, each reading that VM's QMP answers (``query-blockstats``
alone is 36 KB per 4-disk VM), and glibc gives threads up to 8 arenas per CPU, each of which
keeps its freed pages. So, on glibc only (nothing elsewhere):

- ``tune_allocator`` (once, before libvirt starts its threads): at most ``ARENA_MAX`` arenas,
  and blocks of ``MMAP_THRESHOLD`` or more always mmapped, so that a large answer is given back
  to the kernel when freed instead of raising glibc's dynamic threshold and staying in a heap;
- ``trim`` (after a full reconcile pass or a burst of work): ``malloc_trim(0)``, which returns
  the free pages of every arena, at most once per ``TRIM_EVERY_S``.

``BLOCKPLANE_MALLOC=default`` leaves glibc as it is (no tuning, no trimming), to compare. Must
not change what the agent does, only how its memory is kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024
TRIM_THRESHOLD = 4 * 1024 * 1024
TRIM_EVERY_S = 10.0

_lock = threading.Lock()
_trimmed_at = float("-inf")


@functools.cache
def _glibc() -> Any | None:
    if os.environ.get("BLOCKPLANE_MALLOC") == "default":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl and others have no such call
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator() -> bool:
    """Set glibc's arena count and mmap threshold; False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    for parameter, value in ((_M_ARENA_MAX, ARENA_MAX), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                             (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if libc.mallopt(parameter, value) != 1:
            log.warning("mallopt(%d, %d) was refused", parameter, value)
    return True


def trim(*, force: bool = False) -> bool:
    """Give the allocator's free pages back to the kernel (at most once per ``TRIM_EVERY_S``
    unless ``force``); True if it ran."""
    global _trimmed_at
    with _lock:
        now = time.monotonic()
        if not force and now - _trimmed_at < TRIM_EVERY_S:
            return False
        _trimmed_at = now
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
