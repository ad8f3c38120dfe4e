"""How big a commit base must be: ``measure_commit(top_path, base_path, between=()) -> int``.

A commit copies the clusters allocated in the layers above the base into the base. Clusters the
base already holds are rewritten in place, so the base never needs more than its current end
offset (``qemu-img check``'s ``image-end-offset``) plus what a fresh qcow2 holding only the top
layer's own clusters needs (``qemu-img measure`` of the top opened without its backing chain).
That sum is an upper bound, which is what a pre-extend wants. Both run with ``-U`` because the
images are in use by a running VM. Owns those two qemu-img calls; must not grow anything.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blockplane.errors import OperationFailed
from blockplane.storage.commands import CommandRunner, SubprocessRunner

# qemu-img check exits 2 (corruption) or 3 (leaked clusters) with a full JSON report; leaks are
# normal for an image a running QEMU holds open.
_CHECK_REPORTS = (0, 2, 3)


def measure_commit(
    top_path: str | Path,
    base_path: str | Path,
    *,
    between: Sequence[str | Path] = (),
    runner: CommandRunner | None = None,
) -> int:
    """Bytes the base image at ``base_path`` may occupy once ``top_path`` is committed into it.

    ``between`` lists the layers strictly between top and base (a commit of ``vda[1]`` into
    ``vda[3]`` passes ``vda[2]``'s path): their own clusters land in the base as well.
    """
    run = runner or SubprocessRunner()
    layers = [top_path, *between]
    return image_end_offset(base_path, run) + sum(top_layer_required(p, run) for p in layers)


def image_end_offset(path: str | Path, runner: CommandRunner) -> int:
    result = runner.run(["qemu-img", "check", "-U", "--output=json", os.fspath(path)],
                        check=False)
    if result.returncode not in _CHECK_REPORTS or not result.stdout.strip():
        raise OperationFailed(
            f"qemu-img check of {path} failed: {result.stderr.strip() or 'no report'}",
            code="image.failed",
        )
    return int(_json(result.stdout, "qemu-img check")["image-end-offset"])


def top_layer_required(path: str | Path, runner: CommandRunner) -> int:
    spec = {"driver": "qcow2", "backing": None,
            "file": {"driver": _protocol(Path(path)), "filename": os.fspath(path)}}
    result = runner.run(["qemu-img", "measure", "-U", "--output=json", "-O", "qcow2",
                         "json:" + json.dumps(spec)])
    return int(_json(result.stdout, "qemu-img measure")["required"])


def _protocol(path: Path) -> str:
    try:
        return "host_device" if stat.S_ISBLK(os.stat(path).st_mode) else "file"
    except FileNotFoundError as error:
        raise OperationFailed(f"image {path} does not exist", code="image.failed") from error


def _json(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise OperationFailed(f"{what} printed no JSON: {text[:200]!r}",
                              code="image.failed") from error
    if not isinstance(data, dict):
        raise OperationFailed(f"{what} printed {type(data).__name__}, not an object",
                              code="image.failed")
    return data
