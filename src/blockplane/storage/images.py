"""qemu-img, for creating and inspecting disk images. Argument lists only, never a shell."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from blockplane.errors import OperationFailed

QEMU_IMG_TIMEOUT_S = 120


def run_qemu_img(arguments: list[str], timeout_s: float = QEMU_IMG_TIMEOUT_S) -> str:
    try:
        completed = subprocess.run(
            ["qemu-img", *arguments],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OperationFailed(f"qemu-img {arguments[0]} failed: {error}") from error
    if completed.returncode != 0:
        raise OperationFailed(
            f"qemu-img {arguments[0]} failed: {completed.stderr.strip()}", code="image.failed"
        )
    return completed.stdout


def create_qcow2(path: Path, virtual_bytes: int, backing: Path | None = None) -> None:
    arguments = ["create", "-q", "-f", "qcow2", "-o", "preallocation=off"]
    if backing is not None:
        arguments += ["-b", str(backing), "-F", "qcow2"]
    run_qemu_img([*arguments, str(path), str(virtual_bytes)])


def image_info(path: Path, *, force_share: bool = True) -> dict[str, Any]:
    arguments = ["info", "--output=json"]
    if force_share:
        arguments.append("-U")
    info: dict[str, Any] = json.loads(run_qemu_img([*arguments, str(path)]))
    return info


def check_image(path: Path) -> dict[str, Any]:
    output = subprocess.run(
        ["qemu-img", "check", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        timeout=QEMU_IMG_TIMEOUT_S,
        check=False,
    )
    if not output.stdout.strip():
        raise OperationFailed(f"qemu-img check {path} failed: {output.stderr.strip()}")
    result: dict[str, Any] = json.loads(output.stdout)
    return result
