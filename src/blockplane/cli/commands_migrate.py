"""``blockplane vm migrate``: live-migrate a VM to a peer, as a job of kind ``migrate``.

Prints, before anything moves, what each disk gets on the destination (copied or shared, the
volume, the IOThreads and why); ``--wait`` follows the job (progress bar on a terminal, JSON
lines otherwise) and exits 1 unless it is ``done``. Must not decide anything.
"""

from __future__ import annotations

from typing import Any

import click

from blockplane.cli.client import EXIT_INVALID, CLIError, api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import decode
from blockplane.cli.job_wait import wait_for_job
from blockplane.cli.output import console, human_bytes, print_json, table
from blockplane.migration.views import MigrationJobView


def _pool_map(value: str | None) -> dict[str, str]:
    mapped: dict[str, str] = {}
    for entry in (value or "").split(","):
        if not entry.strip():
            continue
        source, sep, destination = entry.partition("=")
        if not sep or not source.strip() or not destination.strip():
            raise CLIError(f"--pool-map {entry!r}: use SRC=DST[,SRC=DST...]", EXIT_INVALID,
                           "migration.invalid")
        mapped[source.strip()] = destination.strip()
    return mapped


@click.command("migrate")
@click.argument("vm")
@click.option("--to", "peer", required=True, metavar="PEER", help="The destination (a peer).")
@click.option("--copy-storage", type=click.Choice(["auto", "all", "none"]), default="auto",
              show_default=True,
              help="auto: disks on storage both hosts share stay, the others are copied; "
              "all: copy every disk; none: copy nothing (every disk must be shared).")
@click.option("--pool-map", default=None, metavar="SRC=DST,...",
              help="Land disks of pool SRC in pool DST there (default: the same name).")
@click.option("--bandwidth", default=None, metavar="BPS",
              help="Limit of the migration (memory and copy), bytes per second or 64M.")
@click.option("--max-downtime", type=click.IntRange(min=0), default=None, metavar="MS",
              help="The longest pause of the VM at the switch-over, in milliseconds.")
@click.option("--wait", is_flag=True, help="Follow the job until it ends.")
@json_option
@pass_cli
def migrate_command(context: CLIContext, vm: str, peer: str, copy_storage: str,
                    pool_map: str | None, bandwidth: str | None, max_downtime: int | None,
                    wait: bool, as_json: bool) -> None:
    """Live-migrate VM to PEER; its disks keep what they had, re-planned for that host."""
    body: dict[str, Any] = {"to": peer, "copy_storage": copy_storage,
                            "pool_map": _pool_map(pool_map)}
    if bandwidth is not None:
        body["bandwidth"] = int(bandwidth) if bandwidth.isdigit() else bandwidth
    if max_downtime is not None:
        body["max_downtime"] = max_downtime
    job = decode(MigrationJobView,
                 context.client.request("POST", api_path("vms", vm, "migrate"), body))
    if as_json and not wait:
        print_json(job)
        return
    if not as_json:
        _print_plan(job)
    if wait:
        raise click.exceptions.Exit(wait_for_job(context.client, job))


def _print_plan(job: MigrationJobView) -> None:
    spec = job.spec
    console.print(f"migration {job.id}: {job.vm} -> {job.peer} ({job.phase})")
    rows = [{**disk, "physical_h": human_bytes(disk.get("physical_bytes"))}
            for disk in spec.get("disks", [])]
    table(rows, [("target", "disk"), ("storage", "storage"), ("pool", "pool"),
                 ("volume", "volume"), ("physical_h", "size"), ("iothreads", "IOThreads"),
                 ("why", "why")], title="on the destination")
    for gap in spec.get("gaps", []):
        console.print(f"[yellow]{gap['target']}: {gap['feature']}[/yellow]: {gap['reason']}; "
                      f"gets {gap['fallback']}")
    for note in spec.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")
