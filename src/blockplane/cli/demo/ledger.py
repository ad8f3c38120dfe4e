"""What one tour created, written down before each thing is created, and taken away again.

The ledger is the only basis of the clean-up: the tour removes the VMs, pools, directories and
labs it recorded, never anything found by a name pattern (another user's ``demo-*`` VM is not
the tour's). It is kept in ``$BLOCKPLANE_HOME/demo/RUN.json`` with the tour's PID and start time,
so a tour killed outright (SIGKILL, a lost terminal) is cleaned up by the next one. Must not
touch anything it did not record, and must keep going when one removal fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from blockplane.cli.client import AgentClient, CLIError, api_path

Kind = Literal["vms", "pools", "directories", "labs"]
KINDS: tuple[Kind, ...] = ("vms", "directories", "pools", "labs")  # the order of removal
#: Refusals that pass once what the tour interrupted has ended (a block job sees its VM gone).
TRANSIENT = ("job.busy", "vm.busy", "volume.in_use", "pool.in_use", "timeout.vm_lock")
SETTLE_S = 30.0


def _process_start(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name (field 2) may hold spaces: count from after its closing ')'.
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Ledger:
    path: Path
    pid: int = field(default_factory=os.getpid)
    started: int | None = None
    entries: dict[Kind, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    @classmethod
    def open(cls, directory: Path, run_id: str) -> Ledger:
        ledger = cls(directory / f"{run_id}.json")
        ledger.started = _process_start(ledger.pid)
        ledger.save()
        return ledger

    @classmethod
    def load(cls, path: Path) -> Ledger:
        data: dict[str, Any] = json.loads(path.read_text())
        ledger = cls(path, int(data["pid"]), data.get("started"))
        for kind in KINDS:
            ledger.entries[kind] = [str(item) for item in data.get(kind, [])]
        return ledger

    @property
    def owner_alive(self) -> bool:
        started = _process_start(self.pid)
        return started is not None and started == self.started

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"pid": self.pid, "started": self.started,
                                         **self.entries}, indent=1))
        os.replace(temporary, self.path)

    def record(self, kind: Kind, name: str) -> None:
        """Write ``name`` down before it is created (a crash in between leaves a name that
        the clean-up finds gone, never a thing nobody knows about)."""
        if name not in self.entries[kind]:
            self.entries[kind].append(name)
            self.save()

    def forget(self, kind: Kind, name: str) -> None:
        if name in self.entries[kind]:
            self.entries[kind].remove(name)
            self.save()

    @property
    def empty(self) -> bool:
        return not any(self.entries.values())

    def close(self) -> None:
        if self.empty:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def stale_ledgers(directory: Path) -> Iterator[Ledger]:
    """Ledgers of tours that are no longer running."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.json")):
        try:
            ledger = Ledger.load(path)
        except (OSError, ValueError, KeyError):
            continue
        if not ledger.owner_alive:
            yield ledger


@dataclass
class Cleanup:
    """Removes what a ledger holds: ``did`` and ``left`` say what was and was not removed."""

    client: AgentClient
    lab_down: Callable[[Path], object]
    did: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def run(self, ledger: Ledger) -> None:
        removers: dict[Kind, Callable[[str], str | None]] = {
            "vms": self._vm, "directories": self._directory, "pools": self._pool,
            "labs": self._lab,
        }
        for kind in KINDS:
            for name in list(ledger.entries[kind]):
                try:
                    done = removers[kind](name)
                except Exception as error:  # keep going, and say what is left
                    message = getattr(error, "message", None) or str(error)
                    self.left.append(f"{kind[:-1]} {name}: {message}")
                    continue
                if done:
                    self.did.append(done)
                ledger.forget(kind, name)

    def _vm(self, name: str) -> str | None:
        try:
            vm = self.client.request("GET", api_path("vms", name))
        except CLIError as error:
            if error.code == "vm.not_found":
                return None
            raise
        if vm["state"] not in ("shutoff", "crashed"):
            self.client.request("POST", api_path("vms", name, "destroy"))
        _settled(lambda: self.client.request("DELETE", api_path("vms", name)))
        return f"VM {name}"

    def _directory(self, path: str) -> str | None:
        if not os.path.lexists(path):
            return None
        shutil.rmtree(path)
        return f"directory {path}"

    def _pool(self, name: str) -> str | None:
        try:
            volumes = self.client.request("GET", api_path("pools", name, "volumes"))
        except CLIError as error:
            if error.code == "pool.not_found":
                return None
            raise
        for volume in volumes:  # e.g. a copy's destination an interrupted job left
            path = api_path("pools", name, "volumes", volume["name"])
            _settled(partial(self.client.request, "DELETE", path))
        _settled(lambda: self.client.request("DELETE", api_path("pools", name)))
        return f"pool {name}" + (f" (and {len(volumes)} volumes)" if volumes else "")

    def _lab(self, root: str) -> str | None:
        if not Path(root).exists():
            return None
        self.lab_down(Path(root))
        return f"lab {root}"


def _settled(action: Callable[[], object]) -> None:
    """``action``, again while the agent refuses it for a reason that passes by itself."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            action()
            return
        except CLIError as error:
            if error.code not in TRANSIENT or time.monotonic() > deadline:
                raise
        time.sleep(0.5)
