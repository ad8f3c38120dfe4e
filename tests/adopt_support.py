"""Domains defined the way a platform defines them, for the adopt tests: by hand, with virsh.

``PlatformHost`` talks to the same libvirt as the agent under test: the system daemon, or the
agent's embedded root (only one process may hold an embed root, so the agent is stopped while
virsh uses it, and started again). ``platform_disks`` makes the images a platform would: a
qcow2 overlay on a base in a dir pool, a qcow2 on a loop device of a loop pool, and a raw file
outside every pool. ``platform_view`` is a domain XML without what blockplane added.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from tests.harness import AgentUnderTest, validate_domain_xml

QEMU = "/usr/bin/qemu-system-x86_64"


@dataclass(frozen=True)
class PlatformDisks:
    base: Path
    root: Path
    data_file: Path
    data_device: str
    foreign: Path


class PlatformHost:
    def __init__(self, agent: AgentUnderTest, system: bool) -> None:
        self.agent = agent
        self.system = system
        self.uri = "qemu:///system" if system else f"qemu:///embed?root={agent.home / 'libvirt'}"

    @contextlib.contextmanager
    def libvirt(self) -> Iterator[None]:
        """Where virsh may use the agent's libvirt: at once on the daemon; with the agent
        stopped (and started again after) on an embedded root."""
        if self.system:
            yield
            return
        self.agent.ok("agent", "stop")
        try:
            yield
        finally:
            self.agent.ok("agent", "start")

    def virsh(self, *args: str, check: bool = True) -> str:
        for attempt in range(3):
            result = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True,
                                    text=True, timeout=120, check=False)
            # Seen in CI on an embedded root just after `agent stop`: virsh failed without a
            # word (exit 1, nothing on stderr), at times after doing the work. Only that silent
            # failure is tried again, and a retry that finds the work done counts as done.
            if attempt and _already_done(args[0], result.stderr):
                result = subprocess.CompletedProcess(result.args, 0, "", "")
            if result.returncode == 0 or result.stderr.strip() or attempt == 2:
                break
            time.sleep(1)
        if check:
            assert result.returncode == 0, f"virsh {args}: exit {result.returncode}: " \
                                           f"{result.stderr}{result.stdout}"
        return result.stdout

    def define_and_start(self, domain_xml: str, name: str, tmp: Path,
                         *then: Sequence[str]) -> None:
        """Define and start ``name`` as a platform would, then run the virsh commands
        ``then`` (all while the agent's libvirt is free)."""
        path = tmp / f"{name}.xml"
        path.write_text(domain_xml)
        with self.libvirt():
            self.virsh("define", str(path))
            self.virsh("start", name)
            for command in then:
                self.virsh(*command)

    def dumpxml(self, name: str, *, inactive: bool = False) -> str:
        """``virsh dumpxml [--inactive]``, read through the running agent (any domain)."""
        with self.agent.http() as client:
            answer = client.get(f"/v1/vms/{name}/xml", params={"inactive": inactive})
        assert answer.status_code == 200, answer.text
        return answer.text

    def remove(self, name: str) -> None:
        """Destroy and undefine ``name`` if it exists (test clean-up; errors ignored)."""
        with self.libvirt():
            self.virsh("destroy", name, check=False)
            self.virsh("undefine", name, "--checkpoints-metadata", check=False)


# What virsh says when asked again to do what a silent failure did after all.
ALREADY_DONE = {
    "define": "already exists",
    "undefine": "failed to get domain",
    "start": "already active",
    "destroy": "not running",
    "checkpoint-create-as": "already exists",
}


def _already_done(command: str, stderr: str) -> bool:
    marker = ALREADY_DONE.get(command)
    return marker is not None and marker in stderr


def platform_disks(agent: AgentUnderTest, name: str, dir_pool: Path, loop_pool: Path
                   ) -> PlatformDisks:
    base = dir_pool / f"{name}-base.qcow2"
    root = dir_pool / f"{name}-root.qcow2"
    _run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "256M"])
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(root)])
    data_file = loop_pool / f"{name}-data.img"
    _run(["truncate", "-s", "64M", str(data_file)])
    device = _run(["losetup", "--find", "--show", str(data_file)]).strip()
    _run(["qemu-img", "create", "-q", "-f", "qcow2", device, "1G"])
    outside = agent.home / "platform"
    outside.mkdir(mode=0o711, exist_ok=True)
    foreign = outside / f"{name}-foreign.raw"
    _run(["qemu-img", "create", "-q", "-f", "raw", str(foreign), "32M"])
    return PlatformDisks(base, root, data_file, device, foreign)


def platform_domain_xml(name: str, disks: PlatformDisks, *, group: str = "plat-gold") -> str:
    """Two disks in pools (vda on IOThread 101 under group ``group``, a chain of two; vdb a
    qcow2 on a loop device), one foreign disk (vdc, with its own ``<iotune>``)."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>2</vcpu>
  <iothreads>1</iothreads>
  <iothreadids><iothread id='101'/></iothreadids>
  <throttlegroups>
    <throttlegroup><total_iops_sec>500</total_iops_sec><group_name>{group}</group_name></throttlegroup>
  </throttlegroups>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' iothread='101'/>
      <source file='{disks.root}'/>
      <target dev='vda' bus='virtio'/>
      <throttlefilters><throttlefilter group='{group}'/></throttlefilters>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native'/>
      <source dev='{disks.data_device}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disks.foreign}'/>
      <target dev='vdc' bus='virtio'/>
      <iotune><total_iops_sec>1000</total_iops_sec></iotune>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def single_disk_xml(name: str, image: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def platform_view(domain_xml: str, targets: Sequence[str] = (), iothreads: Sequence[int] = (),
                  groups: Sequence[str] = ()) -> str:
    """``domain_xml`` without the disks ``targets``, the IOThreads ``iothreads`` and the
    throttle groups ``groups`` (what blockplane added), in canonical form.

    ``<backingStore>`` is libvirt's own record of a chain it found in the images (it writes it
    into the persistent definition once a block job has run), not something a platform set.
    """
    root = etree.fromstring(domain_xml.encode())
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        devices = disk.getparent()
        if target is not None and target.get("dev") in targets and devices is not None:
            devices.remove(disk)
    for node in list(root.iter("backingStore")):
        parent = node.getparent()
        if parent is not None:
            parent.remove(node)
    ids = root.find("iothreadids")
    if ids is not None:
        for node in ids.findall("iothread"):
            if int(node.get("id", "0")) in iothreads:
                ids.remove(node)
        count = root.find("iothreads")
        if count is not None:
            count.text = str(len(ids.findall("iothread")))
    group_list = root.find("throttlegroups")
    if group_list is not None:
        for node in group_list.findall("throttlegroup"):
            if (node.findtext("group_name") or "").strip() in groups:
                group_list.remove(node)
    for node in root.iter():
        if node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    return etree.tostring(root, method="c14n").decode()


def assert_valid(domain_xml: str, what: str) -> None:
    problem = validate_domain_xml(domain_xml, what)
    assert problem is None, problem


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout
