"""Pull-backup XML, libvirt's description of a running backup, checkpoint health, URLs."""

from __future__ import annotations

from blockplane.backup.nbd_client import NbdAddress
from blockplane.backup.records import TcpExport
from blockplane.backup.views import nbd_url
from blockplane.chain.checkpoint_health import (
    DiskHealth,
    checkpoint_state,
    health_from_image,
    health_from_sizes,
)
from blockplane.xml.backup import (
    NbdServer,
    PullDisk,
    parse_backup_description,
    pull_backup_xml,
    qemu_process_owner,
)
from blockplane.xml.chain import parse_checkpoint
from blockplane.xml.parser import parse_xml

# As libvirt 11.3 described a running incremental pull backup (virDomainBackupGetXMLDesc).
DESCRIBED = """<domainbackup mode='pull'>
  <incremental>k1</incremental>
  <server transport='unix' socket='/h/nbd/j/nbd.sock'/>
  <disks>
    <disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='k1'
          exportname='vda' exportbitmap='backup-vda' index='11'>
      <driver type='qcow2'/>
      <scratch file='/p/s8b.qcow2'/>
    </disk>
    <disk name='vdb' backup='yes' type='block' backupmode='full' exportname='vdb' index='12'>
      <driver type='qcow2'/>
      <scratch dev='/dev/loop3'/>
    </disk>
    <disk name='vdc' backup='no'/>
  </disks>
</domainbackup>"""


def test_the_pull_backup_xml() -> None:
    root = parse_xml(pull_backup_xml(
        NbdServer(socket="/s/nbd.sock"),
        [PullDisk("vda", "file", "/p/a.qcow2"), PullDisk("vdb", "block", "/dev/loop1",
                                                          full=True)],
        ["vdc"], "c1"), "backup")
    assert root.get("mode") == "pull" and root.findtext("incremental") == "c1"
    server = root.find("server")
    assert server is not None and {k: v for k, v in server.attrib.items()} == {"transport": "unix",
                                                          "socket": "/s/nbd.sock"}
    vda, vdb, vdc = root.findall("disks/disk")
    assert (vda.get("type"), vda.find("scratch").get("file"), vda.get("backupmode")) == (  # type: ignore[union-attr]
        "file", "/p/a.qcow2", None)
    assert (vdb.get("type"), vdb.find("scratch").get("dev"), vdb.get("backupmode")) == (  # type: ignore[union-attr]
        "block", "/dev/loop1", "full")
    assert {k: v for k, v in vdc.attrib.items()} == {"name": "vdc", "backup": "no"}
    full = parse_xml(pull_backup_xml(NbdServer(socket="/s"), [PullDisk("vda", "file", "/a",
                                                                       full=True)], [], None))
    assert full.find("disks/disk").get("backupmode") is None  # type: ignore[union-attr]


def test_a_tcp_server_with_tls() -> None:
    element = NbdServer(host="10.0.0.2", port=10809, tls=True).element()
    attributes = {k: v for k, v in element.attrib.items()}
    assert attributes == {"transport": "tcp", "name": "10.0.0.2", "port": "10809", "tls": "yes"}


def test_libvirts_description_of_a_running_backup() -> None:
    described = parse_backup_description(DESCRIBED)
    assert (described.mode, described.incremental, described.socket) == (
        "pull", "k1", "/h/nbd/j/nbd.sock")
    assert [(d.target, d.index, d.export, d.bitmap, d.scratch, d.mode)
            for d in described.disks] == [
        ("vda", 11, "vda", "backup-vda", "/p/s8b.qcow2", "incremental"),
        ("vdb", 12, "vdb", None, "/dev/loop3", "full")]
    assert described.disk("vdc") is None


def test_the_qemu_process_owner_from_the_live_xml() -> None:
    xml = ("<domain><seclabel type='dynamic' model='dac' relabel='yes'>"
           "<label>+64055:+64055</label></seclabel></domain>")
    assert qemu_process_owner(xml) == (64055, 64055)
    assert qemu_process_owner("<domain/>") is None


CHECKPOINT = parse_checkpoint("""<domaincheckpoint><name>c1</name><creationTime>5</creationTime>
  <disks><disk name='vda' checkpoint='bitmap' bitmap='c1' size='65536'/>
  <disk name='vdb' checkpoint='bitmap' bitmap='c1'/><disk name='vdc' checkpoint='no'/></disks>
</domaincheckpoint>""")


def test_health_of_a_running_vms_checkpoint_from_the_sizes_libvirt_gives() -> None:
    present = {"vda", "vdb", "vdc", "vdd"}
    verdicts = {t: health_from_sizes(CHECKPOINT, t, present, sizes_asked=True)
                for t in ("vda", "vdb", "vdc", "vdd")}
    assert verdicts == {"vda": DiskHealth.OK, "vdb": DiskHealth.BROKEN,
                        "vdc": DiskHealth.UNTRACKED, "vdd": DiskHealth.UNTRACKED}
    assert health_from_sizes(CHECKPOINT, "vdb", {"vda"}, sizes_asked=True) is (
        DiskHealth.DETACHED)
    assert health_from_sizes(CHECKPOINT, "vda", present, sizes_asked=False) is (
        DiskHealth.UNKNOWN)
    assert checkpoint_state({"vda": DiskHealth.OK, "vdb": DiskHealth.BROKEN}) == "broken"
    assert checkpoint_state({"vda": DiskHealth.OK}) == "ok"
    assert checkpoint_state({"vda": DiskHealth.UNKNOWN}) == "unknown"


def test_health_of_a_stopped_vms_checkpoint_from_the_top_images_bitmaps() -> None:
    assert health_from_image(CHECKPOINT, "vda", {"c1": ("auto",)}) is DiskHealth.OK
    assert health_from_image(CHECKPOINT, "vda", {"c1": ("in-use", "auto")}) is (
        DiskHealth.BROKEN)
    assert health_from_image(CHECKPOINT, "vda", {}) is DiskHealth.BROKEN
    assert health_from_image(CHECKPOINT, "vda", None) is DiskHealth.DETACHED
    assert health_from_image(CHECKPOINT, "vdc", {}) is DiskHealth.UNTRACKED


def test_urls_as_backup_software_takes_them() -> None:
    assert nbd_url("vda", "/h/nbd/j/nbd.sock", None) == "nbd+unix:///vda?socket=/h/nbd/j/nbd.sock"
    assert nbd_url("vda", None, TcpExport("10.0.0.2", 10809, True)) == (
        "nbds://10.0.0.2:10809/vda")
    assert nbd_url("vda", None, TcpExport("::1", 10809, False)) == "nbd://[::1]:10809/vda"
    assert NbdAddress.parse("nbd+unix:///vda?socket=/s.sock") == NbdAddress("vda",
                                                                            socket="/s.sock")
    assert NbdAddress.parse("nbd://127.0.0.1:10900/vdb") == NbdAddress("vdb",
                                                                      host="127.0.0.1",
                                                                      port=10900)
