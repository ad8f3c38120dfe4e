"""Runs the tour: the chosen steps in order, each timed and reported, then the clean-up of what
the ledger holds (also after Ctrl-C or SIGTERM), then the summary.

Owns the control flow and the signals; the steps own what they show. Must not clean up by name
patterns: only the ledger says what is the tour's.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from blockplane.cli.client import AgentClient, CLIError
from blockplane.cli.demo.figures import Phase, StepReport, TourReport
from blockplane.cli.demo.ledger import Cleanup, Ledger, stale_ledgers
from blockplane.cli.demo.narrator import Narrator, print_json
from blockplane.cli.demo.session import TourFailure, TourSession
from blockplane.cli.demo.steps import STEPS, Step

EXIT_INTERRUPTED = 130


def _lab_down(root: Path) -> object:
    from blockplane.lab import down  # the lab is only loaded by a tour that made one

    return down(root)


@contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _shielded(narrator: Narrator) -> Iterator[None]:
    """Ctrl-C during the clean-up would leave half of it undone: say so and go on."""

    def refuse(_signum: int, _frame: FrameType | None) -> None:
        narrator.warn("still cleaning up what the tour made; a moment")

    previous = {number: signal.signal(number, refuse) for number in (signal.SIGINT,
                                                                      signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_tour(client: AgentClient, home: Path, *, steps: Sequence[str] = (),
             as_json: bool = False, keep: bool = False) -> int:
    """Run the tour (every step, or those named); the exit status."""
    narrator = Narrator.for_output(as_json)
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    chosen = [step for step in STEPS if not steps or step.name in steps]
    ledgers = home / "demo"
    with _shielded(narrator):
        leftovers = _clean_stale(client, ledgers, narrator)
    run_id = secrets.token_hex(3)
    tour = TourSession(client, narrator, Ledger.open(ledgers, run_id), run_id)
    reports: list[StepReport] = []
    interrupted = False
    with _interrupt_on_sigterm():
        try:
            for number, step in enumerate(chosen, start=1):
                narrator.header(number, len(chosen), step.label)
                step_started = time.monotonic()
                try:
                    report = _run_step(tour, step)
                except KeyboardInterrupt:
                    reports.append(StepReport(step.name, step.label, "interrupted",
                                              time.monotonic() - step_started))
                    raise
                narrator.done(report)
                reports.append(report)
                for later in chosen[number:]:
                    if later.prepare is not None and later.prepare_after == step.name:
                        later.prepare(tour)
        except KeyboardInterrupt:
            interrupted = True
            narrator.warn("interrupted: cleaning up what the tour made")
        cleanup = _cleanup(client, tour, narrator, keep)
    setup = Phase(tour.setup_seconds, tuple(leftovers + tour.setup_did),
                  (tour.stage_failure,) if tour.stage_failure else ())
    tour_report = TourReport(tuple(reports), time.monotonic() - started, setup, cleanup,
                             interrupted, {"run": run_id, "host": _host(load_at_start)})
    narrator.summary(tour_report)
    if as_json:
        print_json(tour_report)
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if tour_report.ok else 1


def _host(load_at_start: float) -> dict[str, object]:
    """What the tour's times and rates depend on under TCG: the CPUs and how busy they were."""
    return {"cpus": os.cpu_count(), "load_average_start": round(load_at_start, 2),
            "load_average_end": round(os.getloadavg()[0], 2)}


def _run_step(tour: TourSession, step: Step) -> StepReport:
    started, setup_before = time.monotonic(), tour.setup_seconds
    try:
        outcome = step.run(tour)
    except (CLIError, TourFailure) as error:
        message = error.message if isinstance(error, CLIError) else str(error)
        code = f" [{error.code}]" if isinstance(error, CLIError) and error.code else ""
        return StepReport(step.name, step.label, "failed", _own(started, setup_before, tour),
                          error=message + code)
    except Exception as error:  # an answer the tour did not expect: report it, go on
        return StepReport(step.name, step.label, "failed", _own(started, setup_before, tour),
                          error=f"{type(error).__name__}: {error}")
    return StepReport.of(step.name, step.label, outcome, _own(started, setup_before, tour))


def _own(started: float, setup_before: float, tour: TourSession) -> float:
    """The step's own time: without the shared set-up it happened to trigger."""
    return time.monotonic() - started - (tour.setup_seconds - setup_before)


def _cleanup(client: AgentClient, tour: TourSession, narrator: Narrator, keep: bool) -> Phase:
    started = time.monotonic()
    if keep:
        kept = [f"{kind[:-1]} {name}" for kind, names in tour.ledger.entries.items()
                for name in names]
        narrator.note("kept (the next `blockplane demo` removes them): " + ", ".join(kept))
        return Phase(0.0, tuple(f"kept {item}" for item in kept))
    with _shielded(narrator):
        for name, started_early in tour.background.items():
            if not started_early.done:
                narrator.note(f"waiting for the {name} the tour started to come up, to take "
                              "it down ...")
            started_early.wait()
        cleanup = Cleanup(client, _lab_down)
        cleanup.run(tour.ledger)
        tour.ledger.close()
    return Phase(time.monotonic() - started, tuple(f"removed {item}" for item in cleanup.did),
                 tuple(cleanup.left))


def _clean_stale(client: AgentClient, directory: Path, narrator: Narrator) -> list[str]:
    """Remove what tours that were killed outright left (their ledgers say what)."""
    did: list[str] = []
    for ledger in stale_ledgers(directory):
        cleanup = Cleanup(client, _lab_down)
        cleanup.run(ledger)
        ledger.close()
        if cleanup.did:
            narrator.note("removed what an earlier tour left: " + ", ".join(cleanup.did))
            did += [f"removed {item} (an earlier tour's)" for item in cleanup.did]
        for item in cleanup.left:
            narrator.warn(f"an earlier tour left {item}")
    return did
