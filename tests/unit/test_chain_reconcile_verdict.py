"""When the reconcile judges a job libvirt no longer reports (``job_reconcile.verdict_due``)."""

from __future__ import annotations

import pytest

from blockplane.chain.jobs.phases import Effect
from blockplane.chain.jobs.reconcile import BACKUP_OUTCOME_GRACE_S, verdict_due
from blockplane.chain.jobs.state import JobKind


@pytest.mark.parametrize("kind", list(JobKind))
@pytest.mark.parametrize("effect", list(Effect))
def test_a_verdict_the_chain_or_libvirt_proves_is_due_on_the_second_pass(
        kind: JobKind, effect: Effect) -> None:
    if kind is JobKind.BACKUP and effect is Effect.UNKNOWN:
        return
    assert verdict_due(kind, effect, 0.0, vm_running=True)


def test_a_backup_with_no_outcome_in_libvirt_yet_waits_for_libvirt_to_reconnect() -> None:
    # After a restart of the agent (embedded libvirt), the running VM's backup is reported
    # neither running nor ended until libvirt has reconnected to QEMU.
    assert not verdict_due(JobKind.BACKUP, Effect.UNKNOWN, 2.0, vm_running=True)
    assert not verdict_due(JobKind.BACKUP, Effect.UNKNOWN, BACKUP_OUTCOME_GRACE_S - 0.1,
                           vm_running=True)
    assert verdict_due(JobKind.BACKUP, Effect.UNKNOWN, BACKUP_OUTCOME_GRACE_S,
                       vm_running=True)


def test_a_backup_of_a_vm_that_stopped_is_judged_at_once() -> None:
    assert verdict_due(JobKind.BACKUP, Effect.UNKNOWN, 0.0, vm_running=False)


def test_a_backup_whose_targets_were_never_created_is_judged_at_once() -> None:
    # Killed before libvirt was called: there is nothing libvirt could still report.
    assert verdict_due(JobKind.BACKUP, Effect.UNKNOWN, 0.0, vm_running=True,
                       backup_targets_exist=False)
