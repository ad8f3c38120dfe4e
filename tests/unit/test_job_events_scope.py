"""Which block job events the agent asks libvirt about (``chain.jobs.events``): only those of
its own jobs. A migration's disk mirrors end while libvirt switches the VM over; a question to
libvirt then would wait for, or hold up, the migration's own steps. Fakes: no libvirt here."""

from __future__ import annotations

from typing import Any, cast

import pytest

from blockplane.chain.jobs.driver import JobDriver
from blockplane.chain.jobs.events import JobEvents
from blockplane.chain.jobs.state import BlockJobStatus
from blockplane.chain.jobs.store import JobStore
from blockplane.chain.service import ChainService
from blockplane.hypervisor.events import BlockJobEvent

COPY = 2  # VIR_DOMAIN_BLOCK_JOB_TYPE_COPY


class NoJobsOfOurs:
    def live(self) -> list[Any]:
        return []


class LibvirtAsked:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def domain(self, vm: str) -> Any:
        self.asked.append(vm)
        raise AssertionError(f"libvirt was asked about {vm}")


@pytest.mark.parametrize("status", list(BlockJobStatus))
def test_the_end_of_a_block_job_not_ours_asks_libvirt_nothing(status: BlockJobStatus) -> None:
    chains = LibvirtAsked()
    events = JobEvents(cast(JobStore, NoJobsOfOurs()), cast(ChainService, chains),
                       cast(JobDriver, None))
    events.observe(BlockJobEvent("migrating", "vda", COPY, int(status)))
    assert chains.asked == []
