"""What a platform's domain XML holds, read into the inventory adoption judges."""

from __future__ import annotations

from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.xml.inventory import parse_inventory

DOMAIN = """<domain type='kvm'>
  <name>web</name>
  <uuid>6f1c2b1e-0d0a-4c3e-9a49-2a8f6c1d0b11</uuid>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static' current='2'>4</vcpu>
  <iothreads>2</iothreads>
  <iothreadids><iothread id='101'/><iothread id='7'/></iothreadids>
  <throttlegroups>
    <throttlegroup><total_iops_sec>500</total_iops_sec><group_name>gold</group_name></throttlegroup>
  </throttlegroups>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' queues='2'>
        <iothreads>
          <iothread id='101'><queue id='0'/></iothread>
          <iothread id='7'><queue id='1'/></iothread>
        </iothreads>
      </driver>
      <source file='/pool/top.qcow2' index='3'/>
      <backingStore type='file' index='4'>
        <format type='qcow2'/>
        <source file='/pool/base.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <throttlefilters><throttlefilter group='gold'/></throttlefilters>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' iothread='7'/>
      <source dev='/dev/loop7'/>
      <target dev='vdb' bus='virtio'/>
      <iotune><total_iops_sec>900</total_iops_sec></iotune>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='rbd/img'><host name='127.0.0.1' port='6789'/></source>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/isos/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/pool/solo.qcow2'/>
      <target dev='vdd' bus='virtio'/>
    </disk>
  </devices>
</domain>"""


def test_the_domain_level_facts() -> None:
    inventory = parse_inventory(DOMAIN)
    assert (inventory.name, inventory.vcpus, inventory.memory_bytes) == ("web", 2, 1024**3)
    assert inventory.uuid.startswith("6f1c2b1e")
    assert inventory.iothread_ids == (7, 101)
    (group,) = inventory.throttle_groups
    assert (group.name, group.limits) == ("gold", ThrottleLimits(total_iops_sec=500))


def test_every_disk_with_its_chain_mapping_and_limits() -> None:
    disks = {disk.target: disk for disk in parse_inventory(DOMAIN).disks}
    assert list(disks) == ["vda", "vdb", "vdc", "sda", "vdd"]
    vda = disks["vda"]
    assert [link.path for link in vda.chain] == ["/pool/top.qcow2", "/pool/base.qcow2"]
    assert vda.chain_complete and vda.format == "qcow2"
    assert vda.queue_mapping == ((101, (0,)), (7, (1,))) and vda.iothread_ids == (7, 101)
    assert vda.throttle_groups == ("gold",)
    vdb = disks["vdb"]
    assert (vdb.source_type, vdb.path, vdb.iothread) == ("block", "/dev/loop7", 7)
    assert vdb.iotune == ThrottleLimits(total_iops_sec=900)
    assert disks["vdc"].path is None and disks["vdc"].network == "rbd:rbd/img"
    assert (disks["sda"].device, disks["sda"].readonly) == ("cdrom", True)
    # The inactive XML shows no backing chain: the images must be asked.
    assert disks["vdd"].chain_complete is False and len(disks["vdd"].chain) == 1
