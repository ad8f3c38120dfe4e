"""Bulk stats, domain XML limits and rates, as ``blockplane top`` and the metrics read them."""

from __future__ import annotations

from blockplane.hypervisor.bulk_stats import domain_sample
from blockplane.observe.limits import IOTUNE_LAYER, domain_limits
from blockplane.observe.rates import disk_rates

STATS = {
    "state.state": 1,
    "block.count": 3,
    "block.0.name": "vda",
    "block.0.path": "/dev/loop3",
    "block.0.backingIndex": 1,
    "block.0.rd.reqs": 10,
    "block.0.wr.reqs": 20,
    "block.0.rd.bytes": 40960,
    "block.0.wr.bytes": 81920,
    "block.0.rd.times": 2_000_000_000,
    "block.0.allocation": 1_048_576,
    "block.0.capacity": 67_108_864,
    "block.0.physical": 4_194_304,
    "block.0.threshold": 2_097_152,
    # a backing element of vda: not the disk's top, must not replace it
    "block.1.name": "vda",
    "block.1.path": "/pool/base.qcow2",
    "block.1.backingIndex": 2,
    "block.1.rd.reqs": 999,
    "block.2.name": "vdb",
    "block.2.path": "/pool/b.qcow2",
    "iothread.count": 2,
}


def test_the_top_element_of_each_disk_is_its_sample() -> None:
    sample = domain_sample("vm1", STATS)
    assert [disk.target for disk in sample.disks] == ["vda", "vdb"]
    vda = sample.disk("vda")
    assert vda is not None
    assert (vda.read_ops, vda.write_ops, vda.read_bytes, vda.write_bytes) == (10, 20, 40960, 81920)
    assert vda.read_ns == 2_000_000_000
    assert (vda.allocation, vda.physical, vda.capacity, vda.threshold) == (
        1_048_576, 4_194_304, 67_108_864, 2_097_152)
    assert sample.iothreads == 2 and sample.state == 1


def test_missing_counters_read_as_zero_and_no_threshold_as_none() -> None:
    vdb = domain_sample("vm1", STATS).disk("vdb")
    assert vdb is not None
    assert (vdb.read_ops, vdb.write_bytes, vdb.physical, vdb.threshold) == (0, 0, 0, None)


DOMAIN_XML = """<domain type='qemu'><name>vm1</name>
  <throttlegroups>
    <throttlegroup><total_iops_sec>2000</total_iops_sec><total_bytes_sec>1000000</total_bytes_sec>
      <group_name>vmgroup</group_name></throttlegroup>
    <throttlegroup><total_iops_sec>500</total_iops_sec><read_iops_sec>800</read_iops_sec>
      <group_name>blockplane-disk-vda</group_name></throttlegroup>
  </throttlegroups>
  <devices>
    <disk type='block' device='disk'><source dev='/dev/loop3'/><target dev='vda' bus='virtio'/>
      <throttlefilters><throttlefilter group='blockplane-disk-vda'/>
        <throttlefilter group='vmgroup'/></throttlefilters></disk>
    <disk type='file' device='disk'><source file='/p/b'/><target dev='vdb' bus='virtio'/>
      <iotune><total_iops_sec>300</total_iops_sec></iotune></disk>
    <disk type='file' device='disk'><source file='/p/c'/><target dev='vdc' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
  </devices></domain>"""


def test_the_tightest_layer_of_a_chain_binds() -> None:
    limits = domain_limits(DOMAIN_XML)
    vda = limits.disk("vda")
    assert vda.chain == ("blockplane-disk-vda", "vmgroup")
    assert vda.effective == {
        "total_iops_sec": 500, "read_iops_sec": 800, "total_bytes_sec": 1_000_000}
    assert vda.bound_by["total_iops_sec"] == "blockplane-disk-vda"
    assert vda.bound_by["total_bytes_sec"] == "vmgroup"
    assert set(limits.groups) == {"vmgroup", "blockplane-disk-vda"}


def test_iotune_and_unlimited_disks() -> None:
    limits = domain_limits(DOMAIN_XML)
    assert limits.disk("vdb").effective == {"total_iops_sec": 300}
    assert limits.disk("vdb").bound_by == {"total_iops_sec": IOTUNE_LAYER}
    assert limits.disk("vdc").effective == {}
    assert "hdc" not in limits.disks
    assert limits.disk("vdz").chain == ()


def test_rates_per_second_and_a_restarted_counter() -> None:
    before = domain_sample("vm1", STATS).disk("vda")
    after_stats = {**STATS, "block.0.rd.reqs": 110, "block.0.wr.reqs": 5,
                   "block.0.rd.bytes": 40960 + 2 * 409600}
    after = domain_sample("vm1", after_stats).disk("vda")
    assert before is not None and after is not None
    rates = disk_rates(before, after, 2.0)
    assert rates.read_iops == 50.0
    assert rates.write_iops == 0.0  # went backwards: QEMU restarted, rate unknown
    assert rates.read_bytes_per_s == 409600.0
    assert rates.iops == 50.0
    assert disk_rates(None, after, 2.0).iops == 0.0
