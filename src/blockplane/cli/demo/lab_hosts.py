"""The tour's lab: two simulated hosts (``blockplane.lab``), each agent reached over its TLS API
with the lab's CA and the host's token, as a platform or a peer would reach it.

Owns bringing the lab up under a name the ledger holds first, and the clients of its agents.
The lab package itself owns every process it starts (and ``down`` stops them, by PID).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
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
    """Brings the tour's lab up in a thread, so it can start while earlier steps run, then
    (``then``) prepares what the step needs on it, a booted guest, in the same thread. The step
    waits for the lab (``result``) and for that (``prepared``); the clean-up waits for both
    (``wait``), so it never races a request still under way on a lab host."""

    def __init__(self, root: Path, hosts: int,
                 then: Callable[[TourLab], object] | None = None) -> None:
        self.root, self.hosts, self._then = root, hosts, then
        self._lab: TourLab | None = None
        self._error: BaseException | None = None
        self._prepared: object = None
        self._prepare_error: BaseException | None = None
        self._up = threading.Event()
        self._thread = threading.Thread(target=self._bring_up, name="demo-lab", daemon=True)
        self._thread.start()

    def _bring_up(self) -> None:
        from blockplane.lab import up  # loaded only by a tour that shows several hosts

        started = time.monotonic()
        try:
            view = up(self.root, self.hosts, base_address="auto").public()
            agents = tuple(LabAgent(host["name"], host["api"], Path(host["token_file"]),
                                    Path(view["ca"]), Path(host["home_dir"]),
                                    host["libvirt_uri"]) for host in view["hosts"])
            self._lab = TourLab(self.root, agents, time.monotonic() - started, view)
        except BaseException as error:  # handed to the thread that waits for the lab
            self._error = error
            return
        finally:
            self._up.set()
        if self._then is not None:
            try:
                self._prepared = self._then(self._lab)
            except BaseException as error:  # handed to the step that waits for it
                self._prepare_error = error

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> TourLab:
        self._up.wait()
        if self._lab is None:
            raise TourFailure(f"the lab did not come up: {_message(self._error)}")
        return self._lab

    def prepared(self) -> object:
        """What ``then`` returned, once it has (its failure raised here)."""
        self.result()
        self.wait()
        if self._prepare_error is not None:
            if isinstance(self._prepare_error, TourFailure):
                raise self._prepare_error
            raise TourFailure(f"preparing the lab failed: {_message(self._prepare_error)}")
        return self._prepared


def _message(error: BaseException | None) -> str:
    message = getattr(error, "message", None) or str(error)
    code = getattr(error, "code", None)
    return f"{message} [{code}]" if code else message


def start_lab(tour: TourSession, hosts: int = 2,
              then: Callable[[TourLab], object] | None = None) -> LabStarter:
    """Start bringing up the tour's lab (its directory is in the ledger first), then ``then``."""
    root = Path(f"/tmp/bp-demo-lab-{tour.run_id}")  # not under BLOCKPLANE_HOME: each host
    tour.ledger.record("labs", str(root))           # binds its own over that path
    return LabStarter(root, hosts, then)


def describe(tour: TourSession, lab: TourLab) -> None:
    tour.narrator.say(f"lab of {len(lab.hosts)} hosts in {lab.root}, up in {lab.seconds:.1f} s")
    for host in lab.view["hosts"]:
        tour.narrator.say(f"{host['name']}: {host['address']}, agent {host['api']}, own "
                          f"libvirtd (host UUID {host['host_uuid'][:8]}…), peers "
                          f"{', '.join(host['peers']) or 'none'}")
