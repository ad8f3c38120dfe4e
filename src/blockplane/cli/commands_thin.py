"""``blockplane thin status [VM]``: the thin monitor's view of each thin volume."""

from __future__ import annotations

import click

from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch_list
from blockplane.cli.output import console, human_bytes, plain, print_json, table
from blockplane.thin.views import ThinVolumeView


@click.group("thin")
def thin_group() -> None:
    """Thin provisioning: volumes grown on write-threshold events."""


@thin_group.command("status")
@click.argument("vm", required=False)
@json_option
@pass_cli
def thin_status(context: CLIContext, vm: str | None, as_json: bool) -> None:
    """Per thin volume: physical, allocation, threshold, state, extends, pauses, latency, and
    the adaptive extension's last measured write rate, step and reserve."""
    volumes = fetch_list(context.client, ThinVolumeView, "GET", "/v1/thin", vm=vm)
    if as_json:
        print_json(volumes)
        return
    rows = []
    any_recorded = False
    for volume in volumes:
        latency, rate = volume.last_extend_latency_s, volume.write_rate
        recorded = bool(volume.running) and not volume.live
        any_recorded |= recorded
        rows.append({
            **plain(volume),
            "physical_h": human_bytes(volume.physical) + (" *" if recorded else ""),
            "allocation_h": human_bytes(volume.allocation),
            "threshold_h": human_bytes(volume.threshold),
            "latency_h": "-" if latency is None else f"{latency * 1000:.0f} ms",
            "rate_h": "-" if rate is None else f"{rate / 2**20:.0f} MiB/s",
            "step_h": human_bytes(volume.step),
            "reserve_h": human_bytes(volume.reserve),
            "state_h": volume.state + (" (refused)" if volume.refused else "") + (
                " (paused)" if volume.paused else ""),
        })
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
            ("rate_h", "rate"),
            ("step_h", "step"),
            ("reserve_h", "reserve"),
        ],
        title="thin volumes",
    )
    if any_recorded:
        console.print("* recorded size: QEMU was not read now (another call holds the VM's job, "
                      "or it is unresponsive); its allocation and threshold are not known")
    for volume in volumes:
        if volume.reason:
            console.print(f"{volume.vm}/{volume.disk}: {volume.reason}")
