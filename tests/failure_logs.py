"""Keep what tells why a test failed: the agent's log, and libvirt's and QEMU's for its VMs
(and each lab host's agent, libvirtd and QEMU logs).

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


def log_sources(item: pytest.Item) -> list[tuple[str, list[Path]]]:
    """(a name, its log files) for each agent home the test used, and for each lab host (a
    fixture value with ``lab_log_files()``, see tests/lab_support.py)."""
    sources = [(home.name, log_files(home)) for home in homes_of(item)]
    for value in getattr(item, "funcargs", {}).values():
        lab_log_files = getattr(value, "lab_log_files", None)
        if callable(lab_log_files):
            sources += lab_log_files()
    return sources


def keep_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    for name, found in log_sources(item):
        files = [path for path in found if path.is_file()]
        if not files:
            continue
        folder = KEPT / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) / name
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, folder / f"{path.parent.name}-{path.name}")
        for path in files:
            report.sections.append(
                (f"{path.name} of {name} (tail; kept in {folder})", tail(path))
            )


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error})"
