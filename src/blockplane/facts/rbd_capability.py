"""Whether an rbd disk's queues may run in several IOThreads: QEMU's rbd multiqueue fix.

Before QEMU commit 89d22536d1a1 ("rbd: Run co BH CB in the coroutine's AioContext", Hanna
Czenczek, 2025-11), block/rbd.c scheduled a request's completion in the BlockDriverState's
AioContext; with ``iothread-vq-mapping`` the request may run in another IOThread, and the
completion can wake the coroutine before it yielded, corrupting it (RHEL-67115). The fix is in
10.2.0, and in the stable backports 10.1.3 and 10.0.7 (docs/research/rbd-multiqueue-fix.md,
from the qemu-devel stable announcements). Multiqueue block I/O starts in 9.0, so older QEMUs
cannot map a disk at all and the question does not arise there.

Distributions backport fixes without changing the version, so a probe may *enable* mapping on
another version: the fixed rbd.c calls ``qemu_coroutine_get_aio_context``, which the old
``block-rbd.so`` does not import. The version rule comes first: the probe never disables a
version listed above. Owns the rule and the probe; decides nothing about a disk.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from typing import Any

from blockplane.facts.versions import Version

RBD_MULTI_IOTHREAD = "rbd_multi_iothread"
#: The first release of each series that carries the fix; any later series has it too.
FIXED_IN = (Version(10, 0, 7), Version(10, 1, 3), Version(10, 2, 0))
NEEDS = "QEMU >= 10.2.0, or 10.1.3+ / 10.0.7+ (the stable backports of 89d22536d1a1)"
FIX_SYMBOL = b"qemu_coroutine_get_aio_context"
MODULE_GLOBS = (
    "/usr/lib/*/qemu/block-rbd.so",
    "/usr/lib64/qemu/block-rbd.so",
    "/usr/lib/qemu/block-rbd.so",
)


@dataclass(frozen=True)
class RbdDriverProbe:
    """What the installed rbd block module shows: where it is, and whether it imports the
    function the fix calls (None where no module file was found, e.g. a built-in driver)."""

    module: str | None
    imports_fix_symbol: bool | None

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "imports_fix_symbol": self.imports_fix_symbol}


def version_has_fix(qemu: Version) -> bool:
    for first in FIXED_IN:
        same_series = (qemu.major, qemu.minor) == (first.major, first.minor)
        if same_series and qemu >= first:
            return True
    return qemu >= FIXED_IN[-1]


def rbd_multi_iothread(qemu: Version | None, probe: RbdDriverProbe | None = None,
                       ) -> tuple[bool, str]:
    """(supported, reason) for mapping an rbd disk's queues over several IOThreads."""
    if qemu is not None and version_has_fix(qemu):
        return True, f"QEMU {qemu} carries the rbd multiqueue fix (89d22536d1a1)"
    if probe is not None and probe.imports_fix_symbol:
        return True, (f"QEMU {qemu or '(unknown version)'} is older than the fixed releases, "
                      f"but its rbd module ({probe.module}) imports {FIX_SYMBOL.decode()}, "
                      "which only the fixed rbd.c calls: a backport")
    return False, (
        f"QEMU {qemu or '(unknown version)'} lacks the rbd multiqueue fix (\"rbd: Run co BH CB "
        "in the coroutine's AioContext\", 89d22536d1a1): a request completing in another "
        "IOThread can corrupt its coroutine")


def probe_rbd_driver(globs: tuple[str, ...] = MODULE_GLOBS) -> RbdDriverProbe:
    for pattern in globs:
        for path in sorted(glob.glob(pattern)):
            try:
                with open(path, "rb") as module:
                    content = module.read()
            except OSError:
                continue
            return RbdDriverProbe(path, FIX_SYMBOL in content)
    return RbdDriverProbe(None, None)
