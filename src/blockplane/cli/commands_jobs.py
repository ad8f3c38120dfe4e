"""``blockplane job list|show|abort|pivot|speed``: block jobs after they started."""

from __future__ import annotations

import click

from blockplane.chain.jobs.views import JobView
from blockplane.cli.client import api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.job_wait import wait_for_job
from blockplane.cli.output import console, key_values, plain, print_json, table


@click.group("job")
def job_group() -> None:
    """Block jobs: commit, pull, copy and backup."""


def _progress(job: JobView) -> str:
    progress = job.progress
    if not progress or not progress.end:
        return "-"
    return f"{100 * progress.cur / progress.end:.0f}%"


@job_group.command("list")
@click.argument("vm", required=False)
@json_option
@pass_cli
def job_list(context: CLIContext, vm: str | None, as_json: bool) -> None:
    """Jobs, oldest first, with their phase and outcome."""
    jobs = fetch_list(context.client, JobView, "GET", "/v1/jobs", vm=vm)
    if as_json:
        print_json(jobs)
        return
    rows = [{**plain(job), "progress_h": _progress(job)} for job in jobs]
    table(rows, [("id", "id"), ("vm", "vm"), ("target", "disk"), ("kind", "kind"),
                 ("phase", "phase"), ("progress_h", "progress"), ("outcome", "outcome"),
                 ("error", "error")], title="block jobs")


@job_group.command("show")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Follow the job until it ends.")
@json_option
@pass_cli
def job_show(context: CLIContext, job_id: str, wait: bool, as_json: bool) -> None:
    """One job: phase, progress, outcome and what it acts on."""
    job = fetch(context.client, JobView, "GET", api_path("jobs", job_id))
    if wait:
        raise click.exceptions.Exit(wait_for_job(context.client, job))
    if as_json:
        print_json(job)
    else:
        key_values({key: value for key, value in plain(job).items() if key != "spec"},
                   title=f"job {job_id}")
        key_values(plain(job)["spec"], title="spec")


def _action(verb: str, help_text: str) -> click.Command:
    @click.command(verb, help=help_text)
    @click.argument("job_id")
    @json_option
    @pass_cli
    def command(context: CLIContext, job_id: str, as_json: bool) -> None:
        job = fetch(context.client, JobView, "POST", api_path("jobs", job_id, verb))
        if as_json:
            print_json(job)
        else:
            console.print(f"job {job_id}: {job.phase}")

    return command


job_group.add_command(_action("abort", "Abort a job (a copy aborted once READY is kept)."))
job_group.add_command(_action("pivot", "Switch to the new image once the job is READY."))


@job_group.command("speed")
@click.argument("job_id")
@click.argument("bandwidth", metavar="BPS")
@json_option
@pass_cli
def job_speed(context: CLIContext, job_id: str, bandwidth: str, as_json: bool) -> None:
    """Change a running job's bandwidth (bytes per second, or a size such as 8M; 0: none)."""
    value: int | str = int(bandwidth) if bandwidth.isdigit() else bandwidth
    job = fetch(context.client, JobView, "POST", api_path("jobs", job_id, "speed"),
                {"bandwidth": value})
    if as_json:
        print_json(job)
    else:
        console.print(f"job {job_id}: bandwidth {job.spec.bandwidth} B/s")
