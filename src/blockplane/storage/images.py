"""qemu-img: every call blockplane makes to it, through one runner (``run_qemu_img``).

Creating qcow2 images (a fresh volume's, or an overlay that records its backing and the backing's
format, so QEMU never probes it), reading one image's sizes, and sizing a commit base
(``measure_commit``). Images in use by a running VM are opened with ``-U`` (force share).
Argument lists only, never a shell: every call goes through a ``CommandRunner``. Must not create
or delete volumes: the volume service owns the bytes, this only formats and reads them.

How big a commit base must be: a commit copies the clusters allocated in the layers above the
base into the base. Clusters the base already holds are rewritten in place, so the base never
needs more than its current end offset (``qemu-img check``'s ``image-end-offset``) plus what a
fresh qcow2 holding only each upper layer's own clusters needs (``qemu-img measure`` of the
layer opened without its backing chain). That sum is an upper bound, which is what a pre-extend
wants.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane.errors import OperationFailed
from blockplane.storage.commands import CommandResult, CommandRunner, SubprocessRunner

QEMU_IMG_TIMEOUT_S = 120.0
# qemu-img check exits 2 (corruption) or 3 (leaked clusters) with a full JSON report; leaks are
# normal for an image a running QEMU holds open.
_CHECK_REPORTS = (0, 2, 3)


def run_qemu_img(
    arguments: Sequence[str],
    *,
    runner: CommandRunner | None = None,
    accept: Collection[int] | None = (0,),
) -> CommandResult:
    """``qemu-img ARGUMENTS``; an exit status outside ``accept`` raises ``image.failed``
    (``accept`` None: the caller judges every status itself)."""
    runner = runner or SubprocessRunner()
    result = runner.run(["qemu-img", *arguments], check=False, timeout=QEMU_IMG_TIMEOUT_S)
    if accept is not None and result.returncode not in accept:
        raise OperationFailed(
            f"qemu-img {arguments[0]} failed: {result.stderr.strip() or 'no output'}",
            code="image.failed",
        )
    return result


def create_qcow2(
    path: str | Path,
    virtual_bytes: int,
    backing: str | Path | None = None,
    backing_format: str | None = None,
) -> None:
    """Format ``path`` (a file or block device) as qcow2, on ``backing`` if given."""
    arguments = ["create", "-q", "-f", "qcow2", "-o", "preallocation=off"]
    if backing is not None:
        arguments += ["-b", os.fspath(backing), "-F", backing_format or "qcow2"]
    run_qemu_img([*arguments, os.fspath(path), str(virtual_bytes)])


def image_facts(path: str) -> tuple[int | None, int | None]:
    """(virtual size, bytes allocated on the host) of one image, not its chain."""
    info = _json(run_qemu_img(["info", "-U", "--output=json", path]).stdout, "qemu-img info")
    virtual = info.get("virtual-size")
    actual = info.get("actual-size")
    return (int(virtual) if virtual is not None else None,
            int(actual) if actual is not None else None)


@dataclass(frozen=True)
class ImageLayer:
    """One image as ``qemu-img info`` (without its chain) reads it."""

    format: str | None
    virtual_bytes: int | None
    backing_path: str | None
    backing_format: str | None


def image_layer(path: str) -> ImageLayer:
    """The format, virtual size and backing image one image records; its backing is not
    opened, so a missing backing file is found by its caller, not here."""
    info = _json(run_qemu_img(["info", "-U", "--output=json", path]).stdout, "qemu-img info")
    virtual = info.get("virtual-size")
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    return ImageLayer(
        format=info.get("format"),
        virtual_bytes=int(virtual) if virtual is not None else None,
        backing_path=str(backing) if backing else None,
        backing_format=info.get("backing-filename-format"),
    )


def virtual_size(path: str) -> int:
    size, _ = image_facts(path)
    if size is None:
        raise ValueError(f"qemu-img reported no virtual size for {path}")
    return size


def is_block_device(path: str) -> bool:
    return Path(path).is_block_device()


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


def measure_copy(
    path: str | Path, *, shallow: bool = False, runner: CommandRunner | None = None
) -> int:
    """Bytes a fresh qcow2 needs to hold what a copy of the image at ``path`` writes: its whole
    chain flattened, or with ``shallow`` only its own clusters (``qemu-img measure``'s
    ``required``: allocated data and metadata, not the virtual size)."""
    run = runner or SubprocessRunner()
    if shallow:
        return top_layer_required(path, run)
    result = run_qemu_img(["measure", "-U", "--output=json", "-O", "qcow2", os.fspath(path)],
                          runner=run)
    return int(_json(result.stdout, "qemu-img measure")["required"])


def image_end_offset(path: str | Path, runner: CommandRunner) -> int:
    result = run_qemu_img(["check", "-U", "--output=json", os.fspath(path)], runner=runner,
                          accept=None)
    if result.returncode not in _CHECK_REPORTS or not result.stdout.strip():
        raise OperationFailed(
            f"qemu-img check of {path} failed: {result.stderr.strip() or 'no report'}",
            code="image.failed",
        )
    return int(_json(result.stdout, "qemu-img check")["image-end-offset"])


def top_layer_required(path: str | Path, runner: CommandRunner) -> int:
    spec = {"driver": "qcow2", "backing": None,
            "file": {"driver": _protocol(Path(path)), "filename": os.fspath(path)}}
    result = run_qemu_img(["measure", "-U", "--output=json", "-O", "qcow2",
                           "json:" + json.dumps(spec)], runner=runner)
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
