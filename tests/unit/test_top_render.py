"""``blockplane top`` rendering: rows, limits, the fill bar and the jobs column."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from blockplane.cli.commands_top import fill_bar, render
from blockplane.cli.decode import decode
from blockplane.observe.views import TopFrame


def frame(jobs_available: bool = True, disks: int = 2) -> TopFrame:
    rows = [
        {"vm": "web", "target": f"vd{chr(97 + i)}", "read_iops": 1234.0, "write_iops": 56.0,
         "read_bytes_per_s": 5 * 2**20, "write_bytes_per_s": 0, "iops_limit": 1500,
         "bytes_limit": None, "fill_pct": 62.5, "allocation": 5 * 2**20,
         "physical": 8 * 2**20, "virtual": 64 * 2**20, "iothreads": 2,
         "jobs": [{"id": "j1", "kind": "commit", "phase": "running", "progress_pct": 40.0}]
         if i == 0 else [],
         "path": f"/p/vd{chr(97 + i)}", "pool": "p", "volume": None, "thin": True,
         "limits": {"total_iops_sec": 1500}, "bound_by": {"total_iops_sec": "g"},
         "chain": ["g"], "threshold": None}
        for i in range(disks)
    ]
    return decode(TopFrame, {
        "at": 0.0, "window_s": 2.0, "sort": "iops", "jobs_available": jobs_available,
        "totals": {"vms": 1, "disks": disks, "read_iops": 2468.0, "write_iops": 112.0,
                   "read_bytes_per_s": 10 * 2**20, "write_bytes_per_s": 0},
        "disks": rows, "stats_calls": 1, "stats_call_s": 0.01, "vm": None, "vms": []})


def text(renderable: Any) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_frame_shows_each_disk_against_its_limits() -> None:
    screen = text(render(frame()))
    assert "2 disks" in screen and "IOPS r 2468 w 112" in screen
    vda = next(line for line in screen.splitlines() if "vda" in line)
    for cell in ("web", "1234", "56", "1500", "5.0MiB/s", "######", "62%", "5.0M/8.0M/64.0M",
                 "commit 40%"):
        assert cell in vda, (cell, vda)


def test_rows_are_capped_and_a_missing_job_service_is_said() -> None:
    screen = text(render(frame(jobs_available=False, disks=5), rows=2))
    assert "3 more disks" in screen
    assert "JOB" not in screen and "jobs not shown" in screen


def test_fill_bar() -> None:
    assert fill_bar(None) == "-"
    assert fill_bar(0.0) == ".........." + "   0%"
    assert fill_bar(100.0).startswith("##########")
    assert fill_bar(150.0).startswith("##########")
