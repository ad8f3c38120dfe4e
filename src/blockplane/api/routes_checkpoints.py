"""Checkpoint routes: ``/v1/vms/{vm}/checkpoints`` (list) and
``/v1/vms/{vm}/checkpoints/{checkpoint}`` (delete).

Handlers translate between JSON and ``CheckpointService``; they hold no policy.
"""

from __future__ import annotations

from fastapi import APIRouter

from blockplane.api.models import response_list, response_model
from blockplane.chain.checkpoints import CheckpointService
from blockplane.chain.views import CheckpointDeleteResult, CheckpointView


def checkpoints_router(checkpoints: CheckpointService) -> APIRouter:
    router = APIRouter()

    @router.get("/vms/{vm}/checkpoints", response_model=response_list(CheckpointView))
    def list_checkpoints(vm: str) -> list[CheckpointView]:
        """The VM's checkpoints (one per backup), parents first, with the dirty bytes of each
        bitmap while the VM runs."""
        return checkpoints.list(vm)

    @router.delete("/vms/{vm}/checkpoints/{checkpoint}",
                   response_model=response_model(CheckpointDeleteResult))
    def delete_checkpoint(vm: str, checkpoint: str) -> CheckpointDeleteResult:
        """Delete a checkpoint; its bitmaps merge into its parent's. 404
        ``checkpoint.not_found``; 409 ``job.busy`` while a job uses it, ``vm.not_running``
        while the VM is off."""
        return checkpoints.delete(vm, checkpoint)

    return router
