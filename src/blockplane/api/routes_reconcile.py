"""``GET /v1/reconcile``: the first (start-up) and the latest reconcile pass, step by step.

``confirmed`` is true once a pass has checked every IOThread plan and every thin volume against
libvirt and found them as the agent recorded them; ``checked_at`` is when that full check last
ran (at start, then every 30 s).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from blockplane.observe.confirm import Confirmer
from blockplane.observe.reconcile import ReconcileLog
from blockplane.store.intents import IntentRecovery


def reconcile_router(
    log: ReconcileLog, confirmer: Confirmer, intents: IntentRecovery
) -> APIRouter:
    router = APIRouter()

    @router.get("/reconcile")
    def reconcile() -> dict[str, Any]:
        return {
            **log.to_json(),
            "checked_at": confirmer.checked_at,
            "disagreements": confirmer.last_disagreements,
            "unknown_intents": [asdict(intent) for intent in intents.unknown()],
        }

    return router
