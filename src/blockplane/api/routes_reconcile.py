"""``GET /v1/reconcile``: the first (start-up) and the latest reconcile pass, step by step.

``confirmed`` is true once a pass has checked every IOThread plan and every thin volume against
libvirt and found them as the agent recorded them; ``checked_at`` is when that full check last
ran (at start, then at every full pass: every ``full_reconcile_interval_s``); ``full_passes`` and
``last_full`` tell the full passes from the quick ones (``runtime.reconcile_schedule``).
``unknown_intents``: pending intents of a kind this agent does not know, kept for one that does.
"""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.models import response_model
from blockplane.observe.confirm import Confirmer
from blockplane.observe.reconcile import ReconcileLog
from blockplane.observe.views import ReconcileReport
from blockplane.store.intents import IntentRecovery


def reconcile_router(
    log: ReconcileLog, confirmer: Confirmer, intents: IntentRecovery
) -> APIRouter:
    router = APIRouter()

    @router.get("/reconcile", response_model=response_model(ReconcileReport))
    def reconcile() -> ReconcileReport:
        return log.report(confirmer.checked_at, confirmer.last_disagreements, intents.unknown())

    return router
