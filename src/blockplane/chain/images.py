"""qemu-img for chains: write an overlay header that records its backing, read image sizes.

An external image always records its backing format (``-F``), so QEMU never probes it. Images in
use by a running VM are read with ``-U`` (force share). Argument lists only, never a shell. Must
not create or delete volumes: the volume service owns the bytes, this only formats them.
"""

from __future__ import annotations

import json
from pathlib import Path

from blockplane.storage.images import run_qemu_img


def write_overlay(path: str, virtual_bytes: int, backing: str | None,
                  backing_format: str | None) -> None:
    """Format ``path`` (a file or block device) as qcow2, on ``backing`` if given."""
    arguments = ["create", "-q", "-f", "qcow2", "-o", "preallocation=off"]
    if backing is not None:
        arguments += ["-b", backing, "-F", backing_format or "qcow2"]
    run_qemu_img([*arguments, path, str(virtual_bytes)])


def image_facts(path: str) -> tuple[int | None, int | None]:
    """(virtual size, bytes allocated on the host) of one image, not its chain."""
    info = json.loads(run_qemu_img(["info", "-U", "--output=json", path]))
    virtual = info.get("virtual-size")
    actual = info.get("actual-size")
    return (int(virtual) if virtual is not None else None,
            int(actual) if actual is not None else None)


def virtual_size(path: str) -> int:
    size, _ = image_facts(path)
    if size is None:
        raise ValueError(f"qemu-img reported no virtual size for {path}")
    return size


def is_block_device(path: str) -> bool:
    return Path(path).is_block_device()
