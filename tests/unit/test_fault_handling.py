"""The pure parts of fault handling: failpoint specs, throttle intents finished after a crash
or an outage, the free-space guard, events that cannot be stored, "crashed" as a VM state."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import libvirt
import pytest

from blockplane import failpoints
from blockplane.deadlines import BoundedLock
from blockplane.errors import HypervisorError, StateUnavailable
from blockplane.facts.capabilities import Capability
from blockplane.hypervisor.domain import DomainState
from blockplane.hypervisor.errors import translate
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.runtime.eventlog import EventLog
from blockplane.store.database import Database, ensure_room
from blockplane.store.intents import IntentRecovery
from blockplane.store.pending import PendingOperations
from blockplane.store.records import Records
from blockplane.throttle.service import DELETE_INTENT, SET_INTENT, ThrottleService
from tests.throttle_fakes import FakeDomain

SUPPORTED = Capability(True, "QEMU 10.0.2 and libvirt 11.3.0 support it", "libvirt >= 11.2")


def test_failpoint_specs_kill_by_default_or_sleep_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(failpoints.ENVIRONMENT_VARIABLE, "a.b, c.d=sleep:0.05,,")
    assert failpoints._enabled() == {"a.b": "kill", "c.d": "sleep:0.05"}
    started = time.monotonic()
    failpoints.failpoint("c.d")
    failpoints.failpoint("c.d")  # once per process
    assert 0.05 <= time.monotonic() - started < 1.0
    failpoints.failpoint("not.armed")


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return Database(tmp_path / "state.db")


LOCKS: defaultdict[str, BoundedLock] = defaultdict(lambda: BoundedLock("vm", "timeout.vm_lock"))


def service(domain: FakeDomain, database: Database) -> ThrottleService:
    return ThrottleService(lambda _vm: domain, LOCKS.__getitem__, EventLog(Records(database)),
                           SUPPORTED, PendingOperations(database))


def intents(throttle: ThrottleService, database: Database) -> IntentRecovery:
    """The agent's intent registry, with the throttle handlers only."""
    handlers = {SET_INTENT: throttle.recover_intent, DELETE_INTENT: throttle.recover_intent}
    return IntentRecovery(PendingOperations(database), handlers, LOCKS.__getitem__)


class OutageAfterLive(FakeDomain):
    """The live update lands, then the hypervisor goes away: config and the undo both fail."""

    def set_throttle_group(
        self, group: str, params: dict[str, int], *, live: bool, config: bool
    ) -> None:
        super().set_throttle_group(group, params, live=live, config=config)
        if not self.calls[:-1]:  # after the first call only
            self.fail_on |= {("set", "live"), ("set", "config")}


def test_a_set_cut_between_live_and_config_is_finished(database: Database) -> None:
    domain = OutageAfterLive()
    domain.add_group("gold", ThrottleLimits(total_iops_sec=100))
    throttle = service(domain, database)
    with pytest.raises(HypervisorError):
        throttle.set_group("web", "gold", {"total_iops_sec": 200})
    assert len(PendingOperations(database).all()) == 1  # kept: not undone, so not finished
    domain.fail_on.clear()
    [outcome] = intents(throttle, database).recover()
    assert (outcome.outcome, outcome.definitions) == ("completed", ("live", "config"))
    assert domain.live.groups["gold"] == domain.config.groups["gold"]
    assert domain.config.groups["gold"].total_iops_sec == 200
    assert PendingOperations(database).all() == []
    assert intents(throttle, database).recover() == []


def test_an_undone_set_leaves_no_intent(database: Database) -> None:
    domain = FakeDomain()
    throttle = service(domain, database)
    domain.fail_on.add(("set", "config"))
    with pytest.raises(HypervisorError):
        throttle.set_group("web", "gold", {"total_iops_sec": 200})
    assert "gold" not in domain.live.groups  # undone
    assert PendingOperations(database).all() == []


def test_a_delete_cut_half_way_is_finished(database: Database) -> None:
    domain = FakeDomain()
    domain.add_group("gold", ThrottleLimits(total_iops_sec=100))
    pending = PendingOperations(database)
    pending.begin("throttle.delete", "web", "gold", {"kinds": ["live", "config"]})
    del domain.live.groups["gold"]  # the live delete happened, then the agent died
    [outcome] = intents(service(domain, database), database).recover()
    assert (outcome.outcome, outcome.definitions) == ("completed", ("config",))
    assert "gold" not in domain.config.groups


def test_an_intent_of_an_unknown_kind_is_kept_and_reported(database: Database) -> None:
    pending = PendingOperations(database)
    pending.begin("migration.prepare", "web", "peer-b", {"step": 2})
    pending.begin("throttle.delete", "web", "gold", {"kinds": ["config"]})
    domain = FakeDomain()
    domain.add_group("gold", ThrottleLimits(total_iops_sec=100))
    recovery = intents(service(domain, database), database)
    [outcome] = recovery.recover()
    assert outcome.operation == "throttle.delete"
    [kept] = pending.all()
    assert (kept.kind, kept.vm, kept.target, kept.data) == (
        "migration.prepare", "web", "peer-b", {"step": 2})
    assert [(intent.kind, intent.target) for intent in recovery.unknown()] == [
        ("migration.prepare", "peer-b")]
    assert recovery.recover() == [] and len(pending.all()) == 1


def test_the_free_space_guard_refuses_with_disk_full(tmp_path: Path) -> None:
    ensure_room(tmp_path, minimum=1)
    with pytest.raises(StateUnavailable) as refused:
        ensure_room(tmp_path, minimum=1 << 62)
    assert refused.value.code == "state.disk_full" and refused.value.http_status == 503
    assert "nothing was changed" in refused.value.message


def test_an_event_the_store_cannot_take_is_not_an_error(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = Records(database)

    def full(*_args: object) -> None:
        raise StateUnavailable("full", code="state.disk_full")

    monkeypatch.setattr(records, "add_event", full)
    assert EventLog(records).publish("vm.destroyed", "web").id == 0


def test_a_vm_whose_qemu_died_is_crashed() -> None:
    assert DomainState("shutoff", libvirt.VIR_DOMAIN_SHUTOFF_CRASHED).crashed
    assert not DomainState("shutoff", libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED).crashed
    assert not DomainState("running", 1).crashed


def test_a_dropped_connection_is_reported_as_such() -> None:
    error = libvirt.libvirtError("client socket is closed")
    error.err = (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC, "client socket is closed",
                 2, "", None, None, -1, -1)
    translated = translate(error, "setting throttle group gold")
    assert translated.code == "hypervisor.disconnected"
    assert "connection to libvirt was lost" in translated.message
