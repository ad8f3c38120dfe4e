"""``scripts/lab up --ceph``: the one-node cluster, and the rbd pool ``shared`` on every host
with the same libvirt secret UUID, so a disk attached on one host can be opened on the other
(what a migration with no storage copy needs: tests/integration/test_migration_rbd.py). The
``ceph_lab`` fixture (tests/lab_support.py) is the session's one."""

from __future__ import annotations

import pytest

from tests.ceph_support import requires_ceph
from tests.lab_support import Lab

pytestmark = [pytest.mark.integration, requires_ceph]


def test_every_host_has_the_shared_rbd_pool_with_one_secret_uuid(ceph_lab: Lab) -> None:
    assert ceph_lab.ceph is not None
    shared = ceph_lab.ceph["shared_pool"]
    assert (shared["name"], shared["rbd_pool"], shared["user"]) == ("shared", "rbd",
                                                                    "blockplane")
    for host in ceph_lab.hosts:
        pool = host.json("pool", "show", "shared")
        assert pool["type"] == "rbd" and pool["shared"] is True
        assert pool["rbd"]["secret_uuid"] == shared["secret_uuid"]
        assert shared["secret_uuid"] in host.virsh_ok("secret-list")


def test_a_disk_made_on_one_host_is_opened_by_another(ceph_lab: Lab) -> None:
    first, second = ceph_lab.hosts[0], ceph_lab.hosts[1]
    first.json("vm", "create", "labrbd", "--vcpus", "1", "--memory", "128M", "--start")
    attached = first.json("disk", "attach", "labrbd", "--pool", "shared", "--size", "16M")
    image = attached["source"].removeprefix("rbd:")
    monitor = second.json("pool", "show", "shared")["rbd"]["monitors"][0]
    assert ceph_lab.ceph is not None
    secret = ceph_lab.ceph["shared_pool"]["secret_uuid"]
    try:
        # The other host's libvirtd starts a VM on the same image with its own secret copy.
        xml = (f"<domain type='qemu'><name>labrbd2</name><memory unit='MiB'>64</memory>"
               f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
               f"<devices><disk type='network' device='disk'><driver name='qemu' type='raw'"
               f" cache='none' share='yes'/><source protocol='rbd' name='{image}'>"
               f"<host name='{monitor['host']}' port='{monitor['port']}'/></source>"
               f"<auth username='blockplane'><secret type='ceph' uuid='{secret}'/></auth>"
               f"<shareable/><readonly/><target dev='vda' bus='virtio'/></disk>"
               f"</devices></domain>")
        path = ceph_lab.dir / "labrbd2.xml"
        path.write_text(xml)
        second.virsh_ok("create", str(path))
        # While the other host has the image open, a detach here keeps it (Ceph refuses to
        # remove an image with watchers) and says so; the disk record goes.
        first.ok("vm", "destroy", "labrbd")
        detached = first.json("disk", "detach", "labrbd", attached["target"])
        assert detached["volume_deleted"] is None and "kept" in detached["volume_kept"]
        kept = {v["name"] for v in first.json("volume", "list", "shared")}
        assert attached["volume"] in kept
        second.virsh_ok("destroy", "labrbd2")
        first.json("volume", "delete", "shared", attached["volume"])  # nothing holds it now
        assert attached["volume"] not in {v["name"] for v in
                                          first.json("volume", "list", "shared")}
    finally:
        second.virsh("destroy", "labrbd2")
        first.cli("vm", "destroy", "labrbd")
        first.json("vm", "delete", "labrbd")

