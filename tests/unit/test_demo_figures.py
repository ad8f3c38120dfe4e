"""The tour's figures: a figure is within its bounds or not, the summary says a step failed when
one is not, and the checksum the tour expects is that of the bytes the guest writes."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from blockplane.cli.demo.figures import (
    Phase,
    StepOutcome,
    StepReport,
    TourReport,
    at_least,
    equal,
    exactly,
    measured,
    near,
    percentile,
)
from blockplane.cli.demo.patterns import (
    MIB,
    Region,
    expected_checksum,
    stamp,
    stamped_chunks_checksum,
)
from blockplane.cli.demo.steps.lab_guest import writer_script


def test_a_rate_near_its_limit_is_within_and_one_off_by_more_is_not() -> None:
    assert near("IOPS", 185, 200, 0.10, "IOPS", "limit 200").within is True
    assert near("IOPS", 174, 200, 0.10, "IOPS", "limit 200").within is False
    assert near("IOPS", 221, 200, 0.10, "IOPS", "limit").bounds_text() == "180-220: limit ±10%"


def test_exact_minimum_and_text_bounds() -> None:
    assert exactly("pauses", 0, 0).within is True
    assert exactly("pauses", 1, 0).within is False
    assert at_least("extends", 8, 8).within is True
    assert at_least("extends", 7, 8).within is False
    assert equal("checksum", "ab", "ab").within is True
    assert equal("checksum", "ab", "ac").within is False
    assert measured("latency", 3.2, "ms").within is None


def test_a_step_with_a_figure_out_of_bounds_fails_and_says_which() -> None:
    outcome = StepOutcome("vdb: 200 IOPS", "rates", (
        near("before", 199, 200, 0.1, "IOPS", "limit"),
        near("after", 70, 100, 0.1, "IOPS", "limit")), "before")
    report = StepReport.of("limits", "Tiered limits", outcome, 4.0)
    assert report.status == "failed"
    assert "after 70 IOPS is not 90-110" in report.error
    assert report.to_json()["key_figure"]["name"] == "before"
    tour = TourReport((report,), 5.0, Phase(1.0), Phase(1.0))
    assert tour.ok is False and tour.to_json()["ok"] is False


def test_the_tour_is_ok_only_if_every_step_is_and_nothing_was_left() -> None:
    fine = StepReport.of("facts", "Facts", StepOutcome("t", "s", (exactly("n", 1, 1),), "n"), 1)
    assert TourReport((fine,), 1.0, Phase(0.0), Phase(0.1)).ok
    assert not TourReport((fine,), 1.0, Phase(0.0), Phase(0.1, left=("pool p: busy",))).ok
    assert not TourReport((fine,), 1.0, Phase(0.0), Phase(0.1), interrupted=True).ok


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile([5.0, 1.0, 3.0, 2.0], 1.0) == 5.0
    assert percentile([7.0], 0.5) == 7.0


def test_the_expected_checksum_is_that_of_what_the_guest_writes(tmp_path: Path) -> None:
    region = Region("a", 1, 1)
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(3 * MIB))
    script = region.guest_write(str(disk)).replace("/tmp/demo-", f"{tmp_path}/demo-")
    subprocess.run(["sh", "-c", script.replace(" oflag=direct", "")], check=True)
    assert disk.read_bytes()[MIB:2 * MIB] == region.data()
    later = Region("b", 1, 1)
    image = bytearray(3 * MIB)
    image[MIB:2 * MIB] = later.data()  # written last: it covers the first
    assert expected_checksum([region, later], 3) == hashlib.sha256(image).hexdigest()


def test_the_writing_guests_chunks_are_those_the_tour_rebuilds(tmp_path: Path) -> None:
    """The write loop of step 7, run by a shell here on a file: every chunk it wrote reads back
    with the checksum the tour expects, and one chunk more does not."""
    disk = tmp_path / "disk"
    disk.write_bytes(bytes(8 * MIB))
    files = str(tmp_path / "w.")
    script = writer_script(str(disk), 0).replace("/tmp/w.", files).replace(" oflag=direct", "")
    subprocess.run(["sh", "-c", script], check=True)
    deadline = time.monotonic() + 60
    try:
        while not Path(files + "last").exists() or int(Path(files + "last").read_text()) < 2:
            assert time.monotonic() < deadline, "the loop wrote no 3 chunks"
            time.sleep(0.05)
    finally:
        Path(files + "stop").touch()
    while not Path(files + "done").exists():
        assert time.monotonic() < deadline, "the loop did not stop"
        time.sleep(0.05)
    chunks = int(Path(files + "last").read_text()) + 1
    assert not Path(files + "err").exists()
    written = disk.read_bytes()
    assert written[MIB:MIB + 10] == stamp(1).encode() == b"bp-000001\n"
    assert hashlib.sha256(written[:chunks * MIB]).hexdigest() == stamped_chunks_checksum(chunks)
    assert hashlib.sha256(written[:(chunks + 1) * MIB]).hexdigest() != \
        stamped_chunks_checksum(chunks + 1)
