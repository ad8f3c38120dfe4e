"""Step 4, thin provisioning: a thin disk starts as one chunk of its loop volume; the guest
writes 1 GiB flat out; the volume grows chunk by chunk on QEMU's write-threshold events. Shows
each extend's latency (event to resized, from the agent's events) and that the guest never
paused.
"""

from __future__ import annotations

import math
from typing import Any

from blockplane.cli.demo.figures import StepOutcome, at_least, exactly, measured, percentile
from blockplane.cli.demo.session import GIB, MIB, TourFailure, TourSession
from blockplane.cli.demo.steps.guest_io import flat_out_write

VIRTUAL_SIZE = "2G"
WRITE_BYTES = GIB


def thin_step(tour: TourSession) -> StepOutcome:
    guest, pool = tour.guest(), tour.pool()
    disk = tour.attach({"size": VIRTUAL_SIZE, "thin": True})
    target, volume = disk["target"], disk["volume"]
    start = _row(tour, guest.name, target)
    tour.narrator.say(f"attach {target}: thin qcow2, {start['virtual'] // MIB} MiB virtual on "
                      f"a {start['physical'] // MIB} MiB loop volume; threshold armed at "
                      f"{start['threshold'] // MIB} MiB ({start['state']})")
    tour.narrator.say(f"the guest writes {WRITE_BYTES // MIB} MiB flat out ...")
    written = flat_out_write(tour, f"/dev/{target}", WRITE_BYTES)
    end = _row(tour, guest.name, target)
    extended = [event for event in tour.get("events", vm=guest.name, type="thin.extended",
                                            limit=1000) if event.get("volume") == volume]
    latencies_ms = [float(event["latency_s"]) * 1000 for event in extended]
    causes = sorted({str(event.get("cause")) for event in extended})
    tour.narrator.say(f"{len(extended)} extends ({', '.join(causes) or 'none'}): "
                      + " ".join(f"{event['to_bytes'] // MIB}" for event in extended) + " MiB")

    chunk = pool.chunk_bytes
    needed = math.ceil(max(end["allocation"] - start["physical"], 0) / chunk)
    figures = [
        exactly("physical size at attach", start["physical"] / MIB, chunk / MIB, "MiB",
                "one chunk of the pool"),
        exactly("written by the guest", written.bytes_done / MIB, WRITE_BYTES / MIB, "MiB",
                "fio's size"),
        exactly("guest I/O errors", written.errors, 0),
        # An extend adds one chunk or, for a writer fast enough, several (thin.adaptive).
        at_least("chunks added", sum(e["to_bytes"] - e["from_bytes"] for e in extended) // chunk,
                 needed, basis="chunks to hold the allocation"),
        at_least("physical size after", end["physical"] / MIB, end["allocation"] / MIB, "MiB",
                 "the allocation"),
        exactly("guest pauses", end["pauses"] + int(bool(end["paused"])), 0,
                basis="the guest never stopped"),
        measured("write rate", written.bandwidth_bytes / MIB, "MiB/s"),
    ]
    if latencies_ms:
        figures += [measured("extend latency p50", percentile(latencies_ms, 0.5), "ms"),
                    measured("extend latency max", max(latencies_ms), "ms")]
    elif end["extends"]:
        raise TourFailure(f"{end['extends']} extends counted but no thin.extended events")
    for figure in figures:
        tour.narrator.figure(figure)
    title = (f"{target}: thin, {start['virtual'] // GIB} GiB virtual, started at "
             f"{start['physical'] // MIB} MiB (one {chunk // MIB} MiB chunk at "
             f"{pool.utilization_pct}%); {written.bytes_done // MIB} MiB written flat out")
    showed = (f"{end['extends']} extends to {end['physical'] // MIB} MiB, "
              f"{end['pauses']} pauses")
    return StepOutcome(title, showed, tuple(figures), "guest pauses")


def _row(tour: TourSession, vm: str, target: str) -> dict[str, Any]:
    rows = [row for row in tour.get("thin", vm=vm) if row["target"] == target]
    if not rows:
        raise TourFailure(f"{target} is not in `thin status`")
    row: dict[str, Any] = rows[0]
    return row
