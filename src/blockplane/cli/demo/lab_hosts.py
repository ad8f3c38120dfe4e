"""The tour's lab: two simulated hosts (``blockplane.lab``), each agent reached over its TLS API
with the lab's CA and the host's token, as a platform or a peer would reach it.

Owns bringing the lab up under a name the ledger holds first, and the clients of its agents.
The lab package itself owns every process it starts (and ``down`` stops them, by PID).
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from blockplane.cli.client import decode_answer
from blockplane.cli.demo.session import TourFailure, TourSession

REQUEST_TIMEOUT_S = 150.0
HOST_DATA = Path("/var/lib/blockplane")


@dataclass(frozen=True)
class LabAgent:
    """A lab host's agent over HTTPS: the same requests the local client makes."""

    name: str
    api: str
    token_file: Path
    ca: Path
    #: The host's ``/var/lib/blockplane`` as this machine sees it, and its libvirtd's URI.
    home_dir: Path
    libvirt_uri: str

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
        with httpx.Client(base_url=self.api, headers=headers, verify=context,
                          timeout=REQUEST_TIMEOUT_S) as client:
            response = client.request(method, path, json=body,
                                      params={k: v for k, v in params.items() if v is not None})
        return decode_answer(response)

    def outside(self, path: str) -> Path:
        """A path on this host as this machine sees it (its data directory is bound over
        ``/var/lib/blockplane`` inside the host; loop devices are the machine's own)."""
        inside = Path(path)
        if inside.is_relative_to(HOST_DATA):
            return self.home_dir / inside.relative_to(HOST_DATA)
        return inside


@dataclass(frozen=True)
class TourLab:
    root: Path
    hosts: tuple[LabAgent, ...]
    seconds: float
    view: dict[str, Any]


class LabStarter:
    """Brings the tour's lab up in a thread, so it can start while earlier steps run; the
    step that needs it waits for it (``result``), and so does the clean-up (``wait``)."""

    def __init__(self, root: Path, hosts: int) -> None:
        self.root, self.hosts = root, hosts
        self._lab: TourLab | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._bring_up, name="demo-lab", daemon=True)
        self._thread.start()

    def _bring_up(self) -> None:
        from blockplane.lab import up  # loaded only by a tour that shows several hosts

        started = time.monotonic()
        try:
            view = up(self.root, self.hosts, base_address="auto").public()
        except BaseException as error:  # handed to the thread that waits for the lab
            self._error = error
            return
        agents = tuple(LabAgent(host["name"], host["api"], Path(host["token_file"]),
                                Path(view["ca"]), Path(host["home_dir"]), host["libvirt_uri"])
                       for host in view["hosts"])
        self._lab = TourLab(self.root, agents, time.monotonic() - started, view)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> TourLab:
        self.wait()
        if self._lab is None:
            message = getattr(self._error, "message", None) or str(self._error)
            raise TourFailure(f"the lab did not come up: {message}")
        return self._lab


def start_lab(tour: TourSession, hosts: int = 2) -> LabStarter:
    """Start bringing up the tour's lab (its directory is in the ledger first)."""
    root = Path(f"/tmp/bp-demo-lab-{tour.run_id}")  # not under BLOCKPLANE_HOME: each host
    tour.ledger.record("labs", str(root))           # binds its own over that path
    return LabStarter(root, hosts)


def describe(tour: TourSession, lab: TourLab) -> None:
    tour.narrator.say(f"lab of {len(lab.hosts)} hosts in {lab.root}, up in {lab.seconds:.1f} s")
    for host in lab.view["hosts"]:
        tour.narrator.say(f"{host['name']}: {host['address']}, agent {host['api']}, own "
                          f"libvirtd (host UUID {host['host_uuid'][:8]}…), peers "
                          f"{', '.join(host['peers']) or 'none'}")
