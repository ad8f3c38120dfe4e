"""``blockplane top``: a live per-disk view of I/O rates against limits, thin fill and jobs.

Each refresh is one ``GET /v1/top`` (one bulk stats call in the agent). ``--once`` prints a
single frame, as ``top -b -n 1`` does; ``--json`` prints that frame as JSON.
"""

from __future__ import annotations

import time

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch
from blockplane.cli.output import console, human_bytes, print_json
from blockplane.observe.views import JobBrief, TopFrame

BAR_WIDTH = 10
PIPE_WIDTH = 200


@click.command("top")
@click.option(
    "--sort",
    type=click.Choice(["iops", "bw", "fill", "name"]),
    default="iops",
    show_default=True,
    help="Order of the disk rows (busiest or fullest first).",
)
@click.option("--vm", default=None, help="Only this VM's disks.")
@click.option(
    "--interval", "-d", type=click.FloatRange(0.2, 60), default=2.0, show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--rows", "-n", type=click.IntRange(1), default=None, help="Show at most N disks.")
@json_option
@pass_cli
def top_command(
    context: CLIContext,
    sort: str,
    vm: str | None,
    interval: float,
    once: bool,
    rows: int | None,
    as_json: bool,
) -> None:
    """Live per-disk IOPS and bandwidth against limits, thin fill, IOThreads and jobs."""

    def fetch_frame(window: float) -> TopFrame:
        return fetch(context.client, TopFrame, "GET", "/v1/top", vm=vm, sort=sort,
                     window=min(window, 10.0))

    if once or as_json:
        frame = fetch_frame(min(interval, 1.0))
        if as_json:
            print_json(frame)
        else:
            # Into a pipe or a file, like ``top -b``: whole rows, not cut to 80 columns.
            out = console if console.is_terminal else Console(width=PIPE_WIDTH, highlight=False)
            out.print(render(frame, rows))
        return
    frame = fetch_frame(min(interval, 1.0))
    try:
        with Live(render(frame, _live_rows(rows)), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(fetch_frame(interval), _live_rows(rows)), refresh=True)
    except KeyboardInterrupt:
        return


def _live_rows(rows: int | None) -> int:
    fits = max(console.size.height - 8, 1)
    return min(rows, fits) if rows else fits


def render(frame: TopFrame, rows: int | None = None) -> Group:
    totals = frame.totals
    header = Text.assemble(
        ("blockplane top", "bold"),
        f"  {time.strftime('%H:%M:%S', time.localtime(frame.at))}"
        f"  {totals.vms} VMs, {totals.disks} disks"
        f"  IOPS r {totals.read_iops:.0f} w {totals.write_iops:.0f}"
        f"  BW r {_rate(totals.read_bytes_per_s)} w {_rate(totals.write_bytes_per_s)}"
        f"  window {frame.window_s:.1f} s  sort {frame.sort}",
    )
    table = Table(box=None, pad_edge=False, header_style="bold reverse")
    columns = ["VM", "DISK", "R IOPS", "W IOPS", "IOPS LIM", "R BW", "W BW", "BW LIM", "FILL",
               "ALLOC/PHYS/VIRT", "IOT"]
    if frame.jobs_available:
        columns.append("JOB")
    for column in columns:
        table.add_column(column, justify="left" if column in ("VM", "DISK", "FILL", "JOB")
                         else "right", no_wrap=True)
    disks = frame.disks
    shown = disks[:rows] if rows else disks
    for disk in shown:
        cells = [
            disk.vm,
            disk.target,
            f"{disk.read_iops:.0f}",
            f"{disk.write_iops:.0f}",
            _limit(disk.iops_limit),
            _rate(disk.read_bytes_per_s),
            _rate(disk.write_bytes_per_s),
            _limit(disk.bytes_limit, human=True),
            fill_bar(disk.fill_pct),
            "/".join(_size(size) for size in (disk.allocation, disk.physical, disk.virtual)),
            str(disk.iothreads),
        ]
        if frame.jobs_available:
            cells.append(", ".join(_job(job) for job in disk.jobs) or "-")
        table.add_row(*cells)
    parts: list[Text | Table] = [header, table]
    if len(shown) < len(disks):
        parts.append(Text(f"... {len(disks) - len(shown)} more disks (--rows, --vm)", "dim"))
    if not frame.jobs_available:
        parts.append(Text("no job service in this agent: jobs not shown", "dim"))
    return Group(*parts)


def fill_bar(percent: float | None) -> str:
    if percent is None:
        return "-"
    filled = round(min(max(percent, 0.0), 100.0) / 100 * BAR_WIDTH)
    return "#" * filled + "." * (BAR_WIDTH - filled) + f" {percent:3.0f}%"


def _limit(value: int | None, *, human: bool = False) -> str:
    if not value:
        return "-"
    return _rate(value) if human else str(value)


def _rate(value: float) -> str:
    return human_bytes(int(value)).replace(" ", "") + "/s"


def _size(value: int | None) -> str:
    return human_bytes(value).replace(" ", "").replace("iB", "")


def _job(job: JobBrief) -> str:
    progress = job.progress_pct
    return f"{job.kind} {progress:.0f}%" if progress is not None else job.kind
