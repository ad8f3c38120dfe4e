"""``blockplane top`` on a terminal: fio runs in the Linux guest under a 400 IOPS limit, top runs
in a tmux session of its own, and the captured screen must show the busy disk first with a
non-zero read rate at or under its limit.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.harness import BLOCKPLANE, AgentUnderTest, requires_guest

pytestmark = [
    pytest.mark.e2e,
    requires_guest,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

VM = "topg"
LIMIT = 400


@pytest.fixture(scope="module")
def busy_disk(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "tp", "--type", "dir")
    agent.ok("vm", "create", VM, "--vcpus", "2", "--memory", "512M", "--guest", "linux", "--start")
    disk = agent.json("disk", "attach", VM, "--pool", "tp", "--size", "256M", "--format", "raw",
                      "--total-iops-sec", str(LIMIT))
    target = str(disk["target"])
    deadline = time.monotonic() + 30
    while "present" not in agent.ok("guest", "exec", VM, "--", "/bin/sh", "-c",
                                    f"test -b /dev/{target} && echo present || true"):
        assert time.monotonic() < deadline, f"/dev/{target} never appeared in the guest"
        time.sleep(0.5)
    fio = (f"fio --name=top --filename=/dev/{target} --direct=1 --rw=randread --bs=4k "
           "--ioengine=libaio --iodepth=8 --runtime=120 --time_based")
    agent.ok("guest", "exec", VM, "--", "/bin/sh", "-c", f"{fio} >/dev/null 2>&1 &")
    return target


@pytest.fixture
def tmux(agent: AgentUnderTest) -> Iterator[list[str]]:
    """A private tmux server (its own socket), so no other session is touched."""
    base = ["tmux", "-L", f"bptop-{os.getpid()}"]
    yield base
    subprocess.run([*base, "kill-server"], check=False, capture_output=True)


def screen(tmux: list[str]) -> str:
    captured = subprocess.run([*tmux, "capture-pane", "-p", "-t", "top"], check=True,
                              capture_output=True, text=True)
    return captured.stdout


def disk_row(text: str, target: str) -> list[str] | None:
    for line in text.splitlines():
        cells = line.split()
        if len(cells) > 4 and cells[0] == VM and cells[1] == target:
            return cells
    return None


def test_top_shows_the_busy_disk_against_its_limit(
    agent: AgentUnderTest, busy_disk: str, tmux: list[str]
) -> None:
    command = shlex.join([*BLOCKPLANE, "top", "--interval", "1", "--sort", "iops"])
    # The pane's size must come from the pane: rich prefers COLUMNS and LINES, which pytest-xdist
    # workers have set to 80x24.
    env = {name: value for name, value in agent.env.items() if name not in ("COLUMNS", "LINES")}
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "top", "-x", "200", "-y", "40",
         "-e", f"BLOCKPLANE_HOME={agent.home}", command],
        check=True, env=env,
    )
    deadline = time.monotonic() + 60
    while True:
        text = screen(tmux)
        row = disk_row(text, busy_disk)
        if row is not None and float(row[2]) > 0:
            break
        assert time.monotonic() < deadline, f"no busy {busy_disk} row on the screen:\n{text}"
        time.sleep(1)
    print(text)
    assert "blockplane top" in text and "sort iops" in text
    lines = [line.split() for line in text.splitlines() if line.strip()]
    header = next(index for index, cells in enumerate(lines) if cells[:2] == ["VM", "DISK"])
    assert lines[header][:5] == ["VM", "DISK", "R", "IOPS", "W"]
    assert lines[header + 1][:2] == [VM, busy_disk], "sorted by IOPS, the busy disk comes first"
    read_iops, iops_limit = float(row[2]), row[4]
    assert iops_limit == str(LIMIT)
    assert 0 < read_iops <= LIMIT * 1.15, row
    assert row[5].endswith("/s") and row[5] != "0B/s", row
    assert any(cell.endswith("%") for cell in row), row
