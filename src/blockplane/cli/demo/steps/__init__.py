"""The tour's steps, in the order they run. Each takes the session and returns a StepOutcome.

A step is a function of the session alone, so ``blockplane demo --step NAME`` can run any one
of them: it asks the session for the stage it needs (the pool, the guest) and attaches its own
disks. Adding a step is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from blockplane.cli.demo.figures import StepOutcome
from blockplane.cli.demo.session import TourSession
from blockplane.cli.demo.steps.backup import backup_step
from blockplane.cli.demo.steps.chains import chains_step
from blockplane.cli.demo.steps.facts import facts_step
from blockplane.cli.demo.steps.hosts import hosts_step, prepare_lab
from blockplane.cli.demo.steps.iothreads import iothreads_step
from blockplane.cli.demo.steps.limits import limits_step
from blockplane.cli.demo.steps.thin import thin_step


@dataclass(frozen=True)
class Step:
    name: str
    label: str
    run: Callable[[TourSession], StepOutcome]
    #: Started in the background once step ``prepare_after`` ends (when it runs at all), so a
    #: slow set-up overlaps steps that measure nothing it could disturb.
    prepare: Callable[[TourSession], None] | None = None
    prepare_after: str = ""


STEPS: tuple[Step, ...] = (
    Step("facts", "Facts and gating", facts_step),
    Step("iothreads", "IOThread mapping", iothreads_step),
    Step("limits", "Tiered limits", limits_step),
    Step("thin", "Thin provisioning", thin_step),
    Step("chains", "Backing chains", chains_step),
    Step("backup", "Backup and restore", backup_step),
    Step("hosts", "Several hosts", hosts_step, prepare=prepare_lab, prepare_after="thin"),
)
STEP_NAMES = tuple(step.name for step in STEPS)
