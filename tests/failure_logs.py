"""Keep what tells why a test failed: the agent's log, and libvirt's and QEMU's for its VMs.

A test that drives an agent deletes the agent's home when its module ends, logs and all. On a
failure this copies the logs out first, under ``$BLOCKPLANE_TEST_LOGS`` (default
``/tmp/blockplane-test-logs``), and adds their tails to pytest's failure report.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

KEPT = Path(os.environ.get("BLOCKPLANE_TEST_LOGS", "/tmp/blockplane-test-logs"))
TAIL_LINES = 60


def homes_of(item: pytest.Item) -> list[Path]:
    """The BLOCKPLANE_HOMEs of the agents this test used (any fixture value with a home)."""
    funcargs = getattr(item, "funcargs", {})
    homes: list[Path] = []
    for value in funcargs.values():
        home = getattr(value, "home", None)
        if isinstance(home, Path) and home not in homes:
            homes.append(home)
    return homes


def log_files(home: Path) -> list[Path]:
    found = [home / "agent.log"]
    found += sorted((home / "libvirt" / "log" / "qemu").glob("*.log"))
    found += sorted((home / "guest-logs").glob("*.log"))
    return [path for path in found if path.is_file()]


def keep_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    for home in homes_of(item):
        files = log_files(home)
        if not files:
            continue
        folder = KEPT / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) / home.name
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, folder / f"{path.parent.name}-{path.name}")
        for path in files:
            report.sections.append(
                (f"{path.name} of {home} (tail; kept in {folder})", tail(path))
            )


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error})"
