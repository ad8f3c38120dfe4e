"""``blockplane facts`` and ``blockplane events``."""

from __future__ import annotations

import json

import click

from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch
from blockplane.cli.output import console, human_bytes, print_json, table
from blockplane.facts.views import FactsView
from blockplane.store.records import EventRecord


@click.command("facts")
@json_option
@pass_cli
def facts_command(context: CLIContext, as_json: bool) -> None:
    """Host facts and the capability matrix."""
    facts = fetch(context.client, FactsView, "GET", "/v1/facts")
    if as_json:
        print_json(facts)
        return
    qemu, libvirt, kvm = facts.qemu, facts.libvirt, facts.kvm
    console.print(f"[bold]QEMU[/bold]     {qemu.version}  (package {qemu.package_version})")
    console.print(
        f"[bold]libvirt[/bold]  {libvirt.version}  "
        f"(package {libvirt.package_version}, uri {libvirt.uri})"
    )
    console.print(
        f"[bold]KVM[/bold]      {'usable' if kvm.usable else 'not usable'}: {kvm.reason}"
    )
    console.print(
        f"[bold]host[/bold]     {facts.cpus} CPUs, {human_bytes(facts.memory_bytes)}"
    )
    rows = [
        {
            "capability": name,
            "supported": entry.supported,
            "needs": entry.needs,
            "reason": entry.reason,
        }
        for name, entry in facts.capabilities.items()
    ]
    table(
        rows,
        [
            ("capability", "capability"),
            ("supported", "supported"),
            ("needs", "needs"),
            ("reason", "reason"),
        ],
    )


@click.command("events")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events.")
@click.option("--vm", default=None, help="Only this VM's events.")
@click.option("--type", "type_", default=None, help="Only events of this type (or prefix).")
@click.option("--limit", default=100, show_default=True)
@json_option
@pass_cli
def events_command(
    context: CLIContext,
    follow: bool,
    vm: str | None,
    type_: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The agent's event log."""
    if not follow:
        answer = context.client.request("GET", "/v1/events", vm=vm, type=type_, limit=limit)
        events = [EventRecord.from_json(event) for event in answer]
        if as_json:
            print_json([event.to_json() for event in events])
            return
        for event in events:
            _print_event(event)
        return
    for line in context.client.stream_lines(
        "/v1/events", follow="true", vm=vm, type=type_, limit=limit
    ):
        if not line.startswith("data: "):
            continue
        event = EventRecord.from_json(json.loads(line[len("data: ") :]))
        if as_json:
            print(json.dumps(event.to_json()), flush=True)
        else:
            _print_event(event)


def _print_event(event: EventRecord) -> None:
    console.print(
        f"{event.id:>6} {event.type:<20} {event.vm or '-':<12} "
        f"{json.dumps(event.data, default=str)}"
    )
