"""``blockplane iothreads VM`` and ``blockplane vm migrate-check``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from blockplane.cli.client import EXIT_INVALID, CLIError, api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch
from blockplane.cli.output import console, plain, print_json, table
from blockplane.iothreads.views import IOThreadsView
from blockplane.vms.views import MigrateCheckView


@click.command("iothreads")
@click.argument("vm")
@json_option
@pass_cli
def iothreads_command(context: CLIContext, vm: str, as_json: bool) -> None:
    """IOThreads of a VM and the disk queues each one serves."""
    report = fetch(context.client, IOThreadsView, "GET", api_path("vms", vm, "iothreads"))
    if as_json:
        print_json(report)
        return
    rows = [
        {
            "id": entry.id,
            "serves": ", ".join(
                f"{s.disk} q{','.join(map(str, s.queues))}" for s in entry.serves
            )
            or "(idle)",
        }
        for entry in report.iothreads
    ]
    table(rows, [("id", "IOThread"), ("serves", "disk queues")], title=f"IOThreads of {vm}")
    disks = [
        {**plain(disk), "mapping": " ".join(f"{i}:{list(q)}" for i, q in disk.mapping) or "-"}
        for disk in report.disks
    ]
    table(
        disks,
        [
            ("target", "disk"),
            ("bus", "bus"),
            ("mode", "mode"),
            ("queues", "queues"),
            ("mapping", "mapping"),
            ("reason", "why"),
        ],
    )
    console.print(f"spread (max - min queues per pooled IOThread): {report.spread}")
    for line in report.disagreements:
        console.print(f"[yellow]disagreement:[/yellow] {line}")


@click.command("migrate-check")
@click.argument("vm")
@click.option(
    "--to-facts",
    "facts_file",
    default=None,
    type=click.Path(path_type=Path),
    help="The other host's `blockplane facts --json` output.",
)
@click.option(
    "--to", "peer", default=None, metavar="PEER", help="A peer (`peer add`): its live facts."
)
@json_option
@pass_cli
def migrate_check_command(
    context: CLIContext, vm: str, facts_file: Path | None, peer: str | None, as_json: bool
) -> None:
    """Can that host run this VM's disk features? Exit 0 compatible, 1 not."""
    if (facts_file is None) == (peer is None):
        raise CLIError("give exactly one of --to PEER and --to-facts FILE", EXIT_INVALID)
    body: dict[str, object] = {"peer": peer}
    if facts_file is not None:
        try:
            facts = json.loads(facts_file.read_text())
        except (OSError, ValueError) as error:
            raise CLIError(f"cannot read facts from {facts_file}: {error}", EXIT_INVALID) from error
        if not isinstance(facts, dict):
            raise CLIError(f"{facts_file} is not a facts JSON object", EXIT_INVALID)
        body = {"facts": facts}
    result = fetch(context.client, MigrateCheckView, "POST", api_path("vms", vm, "migrate-check"),
                   body)
    if as_json:
        print_json(result)
    elif result.compatible:
        console.print(f"{vm}: compatible; every disk feature runs there unchanged")
    else:
        console.print(f"{vm}: NOT compatible")
        table(
            result.gaps,
            [
                ("target", "disk"),
                ("feature", "feature"),
                ("reason", "reason"),
                ("fallback", "would get"),
            ],
        )
    raise click.exceptions.Exit(0 if result.compatible else 1)
