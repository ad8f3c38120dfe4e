"""``--wait`` for block jobs: follow a job until it ends, with a progress bar on a terminal and
JSON lines otherwise.

A mirror job (copy, active commit) without a pivot asked for never ends by itself: waiting stops
once it is READY. Exit status: 0 for DONE (or READY as above), 1 for FAILED or ABORTED, which
are never reported as success. Must not decide anything about the job.
"""

from __future__ import annotations

import json
import sys
import time

from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from blockplane.chain.jobs.views import JobView
from blockplane.cli.client import EXIT_FAILED, AgentClient, api_path
from blockplane.cli.decode import fetch
from blockplane.cli.output import error_console, plain

POLL_S = 0.25
TERMINAL = ("done", "failed", "aborted")


def finished(job: JobView) -> bool:
    if job.phase in TERMINAL:
        return True
    mirrors = job.kind in ("copy", "active_commit")
    return mirrors and job.phase == "ready" and not job.pivot_requested


def wait_for_job(client: AgentClient, job: JobView) -> int:
    """Follow ``job`` to its end; return the exit status."""
    job = _with_bar(client, job) if sys.stdout.isatty() else _with_lines(client, job)
    if job.phase in ("failed", "aborted"):
        detail = f": {job.error}" if job.error else ""
        error_console.print(f"[red]job {job.id} {job.phase}[/red]{detail}")
        return EXIT_FAILED
    return 0


def _poll(client: AgentClient, job: JobView) -> JobView:
    time.sleep(POLL_S)
    return fetch(client, JobView, "GET", api_path("jobs", job.id))


def _with_lines(client: AgentClient, job: JobView) -> JobView:
    last = None
    while True:
        line = plain(job)
        key = (job.phase, json.dumps(line["progress"]))
        if key != last:
            print(json.dumps(line, sort_keys=True, default=str), flush=True)
            last = key
        if finished(job):
            return job
        job = _poll(client, job)


def _with_bar(client: AgentClient, job: JobView) -> JobView:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(_label(job), total=1.0)
        while True:
            progress.update(task, description=_label(job), completed=_fraction(job))
            if finished(job):
                if job.phase == "done":
                    progress.update(task, completed=1.0)
                return job
            job = _poll(client, job)


def _label(job: JobView) -> str:
    # Escaped: rich would take "[running]" for a style tag and print nothing.
    return escape(f"{job.kind} {job.vm}/{job.target} [{job.phase}]")


def _fraction(job: JobView) -> float:
    return job.progress.fraction if job.progress else 0.0
