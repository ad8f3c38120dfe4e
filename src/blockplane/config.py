"""Where blockplane keeps its state and how it reaches the hypervisor.

Owns the resolution of ``BLOCKPLANE_HOME`` and the files inside it. It must not create
anything: the agent does that when it starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AccelChoice = Literal["auto", "kvm", "tcg"]

DEFAULT_ROOT_HOME = Path("/var/lib/blockplane")
DEFAULT_IOTHREAD_CAP = 16
#: A quick reconcile pass (what changed) this often, a full one (everything) this often
#: (``runtime.reconcile_schedule``); ``BLOCKPLANE_FULL_RECONCILE_S`` sets the full period, and
#: a full period no longer than the quick one makes every pass full (the behaviour before).
DEFAULT_RECONCILE_INTERVAL_S = 2.0
DEFAULT_FULL_RECONCILE_INTERVAL_S = 60.0


def default_home() -> Path:
    explicit = os.environ.get("BLOCKPLANE_HOME")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return DEFAULT_ROOT_HOME
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "blockplane"


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def database(self) -> Path:
        return self.home / "state.db"

    @property
    def socket(self) -> Path:
        return self.home / "agent.sock"

    @property
    def token(self) -> Path:
        return self.home / "token"

    @property
    def libvirt_root(self) -> Path:
        return self.home / "libvirt"

    @property
    def images(self) -> Path:
        """The test guest: ``BLOCKPLANE_IMAGES``, else this home's ``images/``, else the one
        ``make setup`` builds for root (shared by every home on the host)."""
        explicit = os.environ.get("BLOCKPLANE_IMAGES")
        if explicit:
            return Path(explicit)
        own = self.home / "images"
        shared = DEFAULT_ROOT_HOME / "images"
        if not (own / "manifest.json").exists() and (shared / "manifest.json").exists():
            return shared
        return own

    @property
    def pools(self) -> Path:
        return self.home / "pools"

    @property
    def pid_file(self) -> Path:
        return self.home / "agent.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "agent.log"

    @property
    def guest_logs(self) -> Path:
        return self.home / "guest-logs"


@dataclass(frozen=True)
class Settings:
    paths: Paths
    libvirt_uri: str
    accel: AccelChoice = "auto"
    listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    iothread_cap: int = DEFAULT_IOTHREAD_CAP
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    full_reconcile_interval_s: float = DEFAULT_FULL_RECONCILE_INTERVAL_S


def embedded_uri(paths: Paths) -> str:
    return f"qemu:///embed?root={paths.libvirt_root}"


def load_settings(
    home: Path | None = None,
    libvirt_uri: str | None = None,
    accel: AccelChoice | None = None,
    listen: str | None = None,
) -> Settings:
    paths = Paths((home or default_home()).absolute())
    uri = libvirt_uri or os.environ.get("BLOCKPLANE_LIBVIRT_URI") or embedded_uri(paths)
    chosen_accel = accel or _accel_from_env()
    cap = int(os.environ.get("BLOCKPLANE_IOTHREAD_CAP", DEFAULT_IOTHREAD_CAP))
    full_s = float(os.environ.get("BLOCKPLANE_FULL_RECONCILE_S",
                                  DEFAULT_FULL_RECONCILE_INTERVAL_S))
    return Settings(
        paths=paths, libvirt_uri=uri, accel=chosen_accel, listen=listen, iothread_cap=cap,
        full_reconcile_interval_s=full_s,
    )


def _accel_from_env() -> AccelChoice:
    value = os.environ.get("BLOCKPLANE_ACCEL", "auto")
    if value == "kvm":
        return "kvm"
    if value == "tcg":
        return "tcg"
    return "auto"


def read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
