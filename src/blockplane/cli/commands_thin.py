"""``blockplane thin status [VM]``: the thin monitor's view of each thin volume."""

from __future__ import annotations

from typing import Any

import click

from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.output import console, human_bytes, print_json, table


@click.group("thin")
def thin_group() -> None:
    """Thin provisioning: volumes grown on write-threshold events."""


@thin_group.command("status")
@click.argument("vm", required=False)
@json_option
@pass_cli
def thin_status(context: CLIContext, vm: str | None, as_json: bool) -> None:
    """Per thin volume: physical, allocation, threshold, state, extends, pauses, latency."""
    rows: list[dict[str, Any]] = context.client.request("GET", "/v1/thin", vm=vm)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        for field in ("physical", "allocation", "threshold"):
            row[f"{field}_h"] = human_bytes(row[field])
        latency = row["last_extend_latency_s"]
        row["latency_h"] = "-" if latency is None else f"{latency * 1000:.0f} ms"
        row["state_h"] = row["state"] + (" (refused)" if row["refused"] else "") + (
            " (paused)" if row["paused"] else "")
    table(
        rows,
        [
            ("vm", "vm"),
            ("disk", "disk"),
            ("physical_h", "physical"),
            ("allocation_h", "allocation"),
            ("threshold_h", "threshold"),
            ("state_h", "state"),
            ("extends", "extends"),
            ("pauses", "pauses"),
            ("latency_h", "last extend"),
        ],
        title="thin volumes",
    )
    for row in rows:
        if row.get("reason"):
            console.print(f"{row['vm']}/{row['disk']}: {row['reason']}")
