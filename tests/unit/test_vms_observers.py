"""The disk-observer registry tells every observer of every disk, in the order it was given."""

from __future__ import annotations

from blockplane.store.records import VolumeRecord
from blockplane.vms.observers import DiskObservers

VOLUME = VolumeRecord("p", "web-vda", "/p/web-vda", "qcow2", 1 << 30, 1 << 20, True)


class Recorder:
    def __init__(self, name: str, heard: list[str]) -> None:
        self.name = name
        self.heard = heard

    def disk_attached(self, vm: str, target: str, volume: VolumeRecord) -> None:
        self.heard.append(f"{self.name} attached {vm}/{target} {volume.name}")

    def disk_detached(self, vm: str, target: str) -> None:
        self.heard.append(f"{self.name} detached {vm}/{target}")


def test_every_observer_hears_of_each_disk_in_order() -> None:
    heard: list[str] = []
    observers = DiskObservers(Recorder("throttle", heard), Recorder("thin", heard),
                              Recorder("chain", heard))
    observers.attached("web", "vda", VOLUME)
    observers.detached("web", "vda")
    assert heard == [
        "throttle attached web/vda web-vda", "thin attached web/vda web-vda",
        "chain attached web/vda web-vda",
        "throttle detached web/vda", "thin detached web/vda", "chain detached web/vda",
    ]
