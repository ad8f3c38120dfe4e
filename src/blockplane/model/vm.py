"""The VM as blockplane sees it: what was asked for at create time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GuestKind = Literal["none", "linux"]


@dataclass(frozen=True)
class VMSpec:
    name: str
    vcpus: int
    memory_bytes: int
    guest: GuestKind


@dataclass(frozen=True)
class GuestBoot:
    """Direct kernel boot of the bundled Linux test guest."""

    kernel: str
    initrd: str
    cmdline: str


@dataclass(frozen=True)
class DomainDefinition:
    """Everything the domain XML needs, already decided by policy."""

    spec: VMSpec
    virt_type: Literal["qemu", "kvm"]
    emulator: str
    console_log: str
    boot: GuestBoot | None
    iothread_ids: tuple[int, ...] = ()
