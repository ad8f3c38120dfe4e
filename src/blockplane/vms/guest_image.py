"""Where the bundled Linux test guest lives and how it boots."""

from __future__ import annotations

import json
from pathlib import Path

from blockplane.errors import NotFound
from blockplane.model.vm import GuestBoot

DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1"


def guest_boot(images: Path) -> GuestBoot:
    kernel = images / "vmlinuz"
    initrd = images / "initramfs.img"
    manifest = images / "manifest.json"
    if not (kernel.exists() and initrd.exists()):
        raise NotFound(
            f"the Linux test guest is not built in {images}; run `make setup` "
            "(or scripts/build-guest.sh DIR and set BLOCKPLANE_IMAGES=DIR)",
            code="guest.image_missing",
        )
    cmdline = DEFAULT_CMDLINE
    if manifest.exists():
        cmdline = str(json.loads(manifest.read_text()).get("cmdline", DEFAULT_CMDLINE))
    return GuestBoot(kernel=str(kernel), initrd=str(initrd), cmdline=cmdline)
