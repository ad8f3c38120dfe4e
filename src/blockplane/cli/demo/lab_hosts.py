"""The tour's lab: two simulated hosts (``blockplane.lab``), each agent reached over its TLS API
with the lab's CA and the host's token, as a platform or a peer would reach it.

Owns bringing the lab up under a name the ledger holds first, and the clients of its agents.
The lab package itself owns every process it starts (and ``down`` stops them, by PID).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from blockplane.cli.client import decode_answer
from blockplane.cli.demo.session import TourSession

REQUEST_TIMEOUT_S = 150.0


@dataclass(frozen=True)
class LabAgent:
    """A lab host's agent over HTTPS: the same requests the local client makes."""

    name: str
    api: str
    token_file: Path
    ca: Path

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
        with httpx.Client(base_url=self.api, headers=headers, verify=context,
                          timeout=REQUEST_TIMEOUT_S) as client:
            response = client.request(method, path, json=body,
                                      params={k: v for k, v in params.items() if v is not None})
        return decode_answer(response)


@dataclass(frozen=True)
class TourLab:
    root: Path
    hosts: tuple[LabAgent, ...]
    seconds: float


def bring_up_lab(tour: TourSession, hosts: int = 2) -> TourLab:
    from blockplane.lab import up  # loaded only by a tour that shows several hosts

    root = Path(f"/tmp/bp-demo-lab-{tour.run_id}")  # not under BLOCKPLANE_HOME: each host
    tour.ledger.record("labs", str(root))           # binds its own over that path
    tour.narrator.say(f"bringing up a lab of {hosts} hosts in {root} ...")
    started = time.monotonic()
    state = up(root, hosts, base_address="auto").public()
    seconds = time.monotonic() - started
    agents = tuple(LabAgent(host["name"], host["api"], Path(host["token_file"]),
                            Path(state["ca"])) for host in state["hosts"])
    for host in state["hosts"]:
        tour.narrator.say(f"{host['name']}: {host['address']}, agent {host['api']}, own "
                          f"libvirtd (host UUID {host['host_uuid'][:8]}…), peers "
                          f"{', '.join(host['peers']) or 'none'}")
    return TourLab(root, agents, seconds)
