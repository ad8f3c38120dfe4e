"""``--wait`` on a terminal: a progress bar that moves, ends at 100% for a finished job, and
exit status 1 with the outcome named for an aborted one.

The CLI runs on a real pseudo-terminal (``pty.openpty``), so ``isatty()`` is true and rich draws
its live bar; the screen output is read back from the master side.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

import pytest

from tests.chain_helpers import qemu_io_write, wait_phase
from tests.harness import BLOCKPLANE, AgentUnderTest

pytestmark = pytest.mark.integration

MIB = 1 << 20
VM = "tty"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def disk(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "ttyp", "--type", "dir")
    agent.json("vm", "create", VM, "--memory", "128M")
    attached = agent.json("disk", "attach", VM, "--pool", "ttyp", "--size", "64M")
    qemu_io_write(attached["source"], 0, 24 * MIB, 0x5A)
    agent.ok("vm", "start", VM)
    return str(attached["target"])


class Terminal:
    """A CLI command on a pseudo-terminal, and everything it drew."""

    def __init__(self, agent: AgentUnderTest, *args: str) -> None:
        master, slave = pty.openpty()
        env = {**agent.env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
        self.process = subprocess.Popen([*BLOCKPLANE, *args], stdin=slave, stdout=slave,
                                        stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.master = master
        self.screen = b""

    def read_until_exit(self, timeout_s: float = 120) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.master], [], [], 0.2)
            if readable:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                self.screen += chunk
                if not chunk and self.process.poll() is not None:
                    break
            elif self.process.poll() is not None:
                break
        os.close(self.master)
        return self.process.wait(timeout=10)

    @property
    def text(self) -> str:
        return ANSI.sub("", self.screen.decode(errors="replace"))


def percentages(text: str) -> list[int]:
    return [int(value) for value in re.findall(r"(\d+)%", text)]


def test_a_bar_moves_to_100_percent_and_the_job_is_done(agent: AgentUnderTest,
                                                        disk: str) -> None:
    terminal = Terminal(agent, "copy", VM, disk, "--pool", "ttyp", "--pivot",
                        "--bandwidth", "8M", "--wait")
    status = terminal.read_until_exit()
    text = terminal.text
    assert status == 0, text
    assert f"copy {VM}/{disk} [running]" in text
    assert f"copy {VM}/{disk} [done]" in text
    seen = percentages(text)
    assert seen and seen[-1] == 100, text
    assert any(0 < value < 100 for value in seen), f"the bar never moved: {seen}"
    assert seen == sorted(seen), f"the bar went backwards: {seen}"
    assert "{" not in text  # a bar, not the JSON lines a pipe gets


def test_an_aborted_job_exits_1_and_says_so(agent: AgentUnderTest, disk: str) -> None:
    terminal = Terminal(agent, "copy", VM, disk, "--pool", "ttyp", "--pivot",
                        "--bandwidth", "1M", "--wait")
    deadline = time.monotonic() + 60
    while not (jobs := [j for j in agent.json("job", "list", VM) if j["phase"] == "running"]):
        assert time.monotonic() < deadline, "the copy never started running"
        time.sleep(0.2)
    agent.ok("job", "abort", str(jobs[0]["id"]))
    status = terminal.read_until_exit()
    text = terminal.text
    assert status == 1, text
    assert f"job {jobs[0]['id']} aborted" in text
    assert "[done]" not in text and "100%" not in text
    assert wait_phase(agent, str(jobs[0]["id"]), ("aborted",))["phase"] == "aborted"
