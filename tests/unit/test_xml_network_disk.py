"""An rbd disk's XML: ``<source protocol='rbd'>`` with monitors and ``<auth>``, round trip."""

from __future__ import annotations

from blockplane.model.disk import DiskDevice, NetworkHost, NetworkSource
from blockplane.xml.chain import ImageTarget, copy_destination_xml
from blockplane.xml.disk import disk_element, parse_disks, to_xml

RBD = NetworkSource("rbd", "pool/web-vda", (NetworkHost("10.0.0.1", 3300),
                                            NetworkHost("mon-b", None)),
                    "web", "829de51d-3c2e-50ac-b0c9-16bce36ec690")


def device() -> DiskDevice:
    return DiskDevice(target="vda", bus="virtio", source=RBD.path, source_kind="network",
                      format="raw", queues=2, iothread=101, cache="none", discard="unmap",
                      network=RBD)


def test_the_disk_names_the_image_its_monitors_and_its_secret_never_a_key() -> None:
    xml = to_xml(disk_element(device()))
    assert "<disk type=\"network\" device=\"disk\">" in xml.replace("'", '"')
    assert 'protocol="rbd" name="pool/web-vda"' in xml
    assert '<host name="10.0.0.1" port="3300"/>' in xml and '<host name="mon-b"/>' in xml
    assert '<auth username="web"><secret type="ceph" uuid="829de51d' in xml
    assert " io=" not in xml  # librbd serves it, no aio mode


def test_round_trip() -> None:
    domain = f"<domain><devices>{to_xml(disk_element(device()))}</devices></domain>"
    [parsed] = parse_disks(domain)
    assert parsed.source == "rbd:pool/web-vda" and parsed.source_kind == "network"
    assert parsed.network == RBD and parsed.iothread == 101 and parsed.queues == 2


def test_auth_inside_source_as_libvirt_writes_it_after_a_copy() -> None:
    domain = ("<domain><devices><disk type='network' device='disk'><driver type='raw'/>"
              "<source protocol='rbd' name='p/i'><host name='h' port='1'/>"
              "<auth username='u'><secret type='ceph' uuid='x'/></auth></source>"
              "<target dev='vdb' bus='virtio'/></disk></devices></domain>")
    [parsed] = parse_disks(domain)
    assert parsed.network is not None
    assert (parsed.network.auth_username, parsed.network.secret_uuid) == ("u", "x")


def test_a_copy_destination_in_ceph() -> None:
    xml = copy_destination_xml(ImageTarget("vda", "network", RBD.path, "raw", network=RBD))
    assert xml.startswith("<disk type=\"network\">".replace('"', "'")) or 'type="network"' in xml
    assert 'name="pool/web-vda"' in xml and '<driver type="raw"/>' in xml
    assert 'uuid="829de51d-3c2e-50ac-b0c9-16bce36ec690"' in xml
