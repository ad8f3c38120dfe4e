"""``DomainHandle``: the narrow view of one libvirt domain that services are given.

It exposes the calls the features need and nothing else, translated into blockplane errors.
It decides nothing; callers hold the policy.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt
import libvirt_qemu

from blockplane import deadlines
from blockplane.errors import DeadlineExceeded, HypervisorError, OperationFailed
from blockplane.hypervisor.calls import CallGate, CallKind
from blockplane.hypervisor.errors import AGENT_TIMEOUTS, libvirt_errors, translate
from blockplane.hypervisor.migration import DomainMigration

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

AFFECT_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
AFFECT_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


@dataclass(frozen=True)
class DomainState:
    state: str
    reason: int

    @property
    def active(self) -> bool:
        return self.state not in ("shutoff", "crashed", "nostate")

    @property
    def crashed(self) -> bool:
        """Off because QEMU died under it (killed, or crashed), not because anyone asked."""
        return self.state == "crashed" or (
            self.state == "shutoff" and self.reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED
        )


@dataclass(frozen=True)
class GuestExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


T = TypeVar("T")

#: The guest agent's own wait per command, in libvirt (seconds), and how much longer the
#: caller waits for libvirt to report that it gave up.
AGENT_COMMAND_TIMEOUT_S = 10.0
AGENT_REPLY_GRACE_S = 5.0


class DomainHandle:
    """Calls that may block go through the ``CallGate`` (bounded by the caller's deadline);
    the ones that only read libvirt's own state under the domain's lock (state, is_active,
    is_persistent) are made directly."""

    def __init__(self, domain: Any, gate: CallGate) -> None:
        self._domain = domain
        self._gate = gate

    def _call(
        self, what: str, call: Callable[[], T], *, kind: CallKind = CallKind.MONITOR,
        timeout_s: float | None = None,
    ) -> T:
        with libvirt_errors(what):
            return self._gate.run(self.name, what, kind, call, timeout_s=timeout_s)

    @property
    def name(self) -> str:
        return str(self._domain.name())

    @property
    def unresponsive(self) -> bool:
        """A call to this domain was abandoned past its deadline and has not returned: what
        it changes is unknown until it does, so reconcilers leave the domain alone."""
        return self._gate.stuck(self.name, CallKind.MONITOR) is not None

    def migration(self) -> DomainMigration:
        """The calls of a live migration of this domain (``hypervisor.migration``)."""
        return DomainMigration(self._domain, self._gate)

    @property
    def uuid(self) -> str:
        return str(self._domain.UUIDString())

    def state(self) -> DomainState:
        with libvirt_errors(f"reading the state of {self.name}"):
            state, reason = self._domain.state()
        return DomainState(STATE_NAMES.get(state, str(state)), reason)

    def is_active(self) -> bool:
        with libvirt_errors(f"checking {self.name}"):
            return bool(self._domain.isActive())

    def xml(self, *, inactive: bool = False, secure: bool = False) -> str:
        """``secure``: with passwords and the like, for an XML that will be defined again.

        Bounded like the calls that change things: libvirt 11.3 takes the domain's job to
        format a running domain's XML, so it waits behind a call QEMU does not answer.
        """
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        if secure:
            flags |= libvirt.VIR_DOMAIN_XML_SECURE
        return str(self._call(f"reading the XML of {self.name}",
                              lambda: self._domain.XMLDesc(flags)))

    def start(self) -> None:
        self._call(f"starting {self.name}", lambda: self._domain.create())
        self.bound_guest_agent()

    def bound_guest_agent(self) -> None:
        """Make libvirt give up on the guest agent after ``AGENT_COMMAND_TIMEOUT_S`` in every
        command it sends on its own (a quiesce's freeze and thaw, a shutdown through the agent),
        not only in ours: a hung agent must not hold the domain's agent job for long."""
        self._call(
            f"bounding the guest agent of {self.name}",
            lambda: self._domain.agentSetResponseTimeout(int(AGENT_COMMAND_TIMEOUT_S), 0),
        )

    def shutdown(self, *, through_guest_agent: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT if through_guest_agent else 0
        kind = CallKind.AGENT if through_guest_agent else CallKind.MONITOR
        self._call(f"shutting down {self.name}", lambda: self._domain.shutdownFlags(flags),
                   kind=kind)

    def destroy(self) -> None:
        self._call(f"destroying {self.name}", lambda: self._domain.destroy())

    def resume(self) -> None:
        self._call(f"resuming {self.name}", lambda: self._domain.resume())

    def suspend(self) -> None:
        self._call(f"pausing {self.name}", lambda: self._domain.suspend())

    def undefine(self) -> None:
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
        self._call(f"undefining {self.name}", lambda: self._domain.undefineFlags(flags))

    def attach_device(self, device_xml: str, *, live: bool, config: bool) -> None:
        self._call(
            f"attaching a device to {self.name}",
            lambda: self._domain.attachDeviceFlags(device_xml, _affect(live, config)),
        )

    def detach_device(self, device_xml: str, *, live: bool, config: bool) -> None:
        self._call(
            f"detaching a device from {self.name}",
            lambda: self._domain.detachDeviceFlags(device_xml, _affect(live, config)),
        )

    def add_iothread(self, iothread_id: int, *, live: bool, config: bool) -> None:
        self._call(
            f"adding IOThread {iothread_id} to {self.name}",
            lambda: self._domain.addIOThread(iothread_id, _affect(live, config)),
        )

    def del_iothread(self, iothread_id: int, *, live: bool, config: bool) -> None:
        self._call(
            f"removing IOThread {iothread_id} from {self.name}",
            lambda: self._domain.delIOThread(iothread_id, _affect(live, config)),
        )

    def set_block_threshold(self, target: str, threshold_bytes: int) -> None:
        """Arm QEMU's one-shot write threshold on ``target`` (``vda`` or ``vda[N]``)."""
        self._call(
            f"setting the write threshold of {self.name}/{target}",
            lambda: self._domain.setBlockThreshold(target, threshold_bytes, 0),
        )

    def block_info(self, target: str) -> tuple[int, int, int]:
        """(capacity, allocation, physical) of ``target``, as libvirt reports them."""
        capacity, allocation, physical = self._call(
            f"reading block info of {self.name}/{target}", lambda: self._domain.blockInfo(target, 0)
        )
        return int(capacity), int(allocation), int(physical)

    def block_stats(self) -> dict[str, Any]:
        """This domain's bulk block stats (``block.N.*``), with backing chain elements."""
        records = self._call(
            f"reading block stats of {self.name}",
            lambda: self._domain.connect().domainListGetStats(
                [self._domain],
                libvirt.VIR_DOMAIN_STATS_BLOCK,
                libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING,
            ),
        )
        return dict(records[0][1]) if records else {}

    def disk_errors(self) -> dict[str, int]:
        return dict(self._call(f"reading disk errors of {self.name}", self._domain.diskErrors))

    def monitor_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """QMP passthrough. Tests use it to read QEMU's own view; features must not."""
        reply = self._call(
            f"QMP on {self.name}",
            lambda: libvirt_qemu.qemuMonitorCommand(self._domain, json.dumps(command), 0),
        )
        result: dict[str, Any] = json.loads(reply)
        return result

    def agent_command(self, command: dict[str, Any], timeout_s: float = AGENT_COMMAND_TIMEOUT_S
                      ) -> Any:
        """One guest agent command; libvirt waits ``timeout_s`` at most (less if the caller's
        deadline is nearer), and the caller a little longer, for libvirt to say so."""
        what = f"guest agent command {command.get('execute')} on {self.name}"
        wait = max(1, int(deadlines.bounded(timeout_s, CallKind.AGENT.code, what)))
        try:
            reply = self._gate.run(
                self.name, what, CallKind.AGENT,
                lambda: libvirt_qemu.qemuAgentCommand(self._domain, json.dumps(command), wait, 0),
                timeout_s=wait + AGENT_REPLY_GRACE_S,
            )
        except libvirt.libvirtError as error:
            if error.get_error_code() in AGENT_TIMEOUTS:
                raise translate(error, what) from error
            raise OperationFailed(
                f"the guest agent of {self.name} did not answer: {error.get_error_message()}",
                code="guest.agent_unavailable",
            ) from error
        return json.loads(reply).get("return")

    def guest_exec(self, argv: list[str], timeout_s: float = 120.0) -> GuestExecResult:
        """Run ``argv`` in the guest; ``timeout.guest_exec`` once it outlives ``timeout_s`` (or
        the caller's deadline). The command is then left running in the guest."""
        started = self.agent_command(
            {
                "execute": "guest-exec",
                "arguments": {"path": argv[0], "arg": argv[1:], "capture-output": True},
            }
        )
        pid = int(started["pid"])
        deadline = time.monotonic() + deadlines.remaining(timeout_s)
        delay = 0.02
        with deadlines.waiting_on(f"guest command {argv[0]} (pid {pid}) in {self.name}"):
            while True:
                status = self.agent_command(
                    {"execute": "guest-exec-status", "arguments": {"pid": pid}}
                )
                if status.get("exited"):
                    return GuestExecResult(
                        exit_code=int(status.get("exitcode", 255 if status.get("signal") else 0)),
                        stdout=_decode(status.get("out-data")),
                        stderr=_decode(status.get("err-data")),
                    )
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(
                        f"guest command {argv[0]} (pid {pid}) still running in {self.name} "
                        f"after {timeout_s:.0f} s; it was left running in the guest",
                        code="timeout.guest_exec",
                        vm=self.name,
                    )
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.25)

    def is_persistent(self) -> bool:
        with libvirt_errors(f"checking {self.name}"):
            return bool(self._domain.isPersistent())

    def set_throttle_group(
        self, group: str, params: dict[str, int], *, live: bool, config: bool
    ) -> None:
        """Create throttle group ``group``, or change it in place (virDomainSetThrottleGroup).

        libvirt 11.3 keeps every field the call leaves out, so pass them all. It also needs
        ``group_name`` among the typed parameters: without it the group is stored with no name,
        the persistent XML no longer loads ("Failed to load config") and a later call crashed
        the process. The name is therefore always added here, equal to ``group``.
        """
        typed: dict[str, int | str] = {**params, "group_name": group}
        self._call(
            f"setting throttle group {group} of {self.name}",
            lambda: self._domain.setThrottleGroup(group, typed, _affect(live, config)),
        )

    def del_throttle_group(self, group: str, *, live: bool, config: bool) -> None:
        """Delete throttle group ``group``; libvirt refuses while a disk's filter uses it."""
        self._call(
            f"deleting throttle group {group} of {self.name}",
            lambda: self._domain.delThrottleGroup(group, _affect(live, config)),
        )

    def set_block_iotune(
        self,
        target: str,
        params: dict[str, int],
        *,
        group_name: str | None,
        live: bool,
        config: bool,
    ) -> None:
        """Set a disk's ``<iotune>`` (virDomainSetBlockIoTune); the fallback to throttle groups."""
        typed: dict[str, int | str] = dict(params)
        if group_name:
            typed["group_name"] = group_name
        self._call(
            f"setting the I/O limits of {self.name}/{target}",
            lambda: self._domain.setBlockIoTune(target, typed, _affect(live, config)),
        )


    # Backing chains and block jobs (blockplane.chain). Names passed as ``disk`` are ``vda`` or
    # libvirt's indexed ``vda[N]``; bandwidths are bytes per second, 0 meaning unlimited.

    def snapshot_disks(self, snapshot_xml: str, *, quiesce: bool) -> None:
        """External, disk-only, atomic snapshot onto overlays the caller already created.

        REUSE_EXT: blockplane creates each overlay (with its backing recorded) in the disk's
        pool; NO_METADATA: blockplane keeps its own snapshot records.
        """
        flags = (
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        )
        if quiesce:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
        if quiesce:  # libvirt freezes the guest's filesystems through the guest agent first
            self._gate.refuse_if_wedged(self.name, CallKind.AGENT, "a quiesced snapshot")
        self._call(f"snapshotting disks of {self.name}",
                   lambda: self._domain.snapshotCreateXML(snapshot_xml, flags))

    def block_commit(
        self, disk: str, base: str, top: str, bandwidth: int, *, active: bool
    ) -> None:
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES
        if active:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
        self._call(
            f"committing {top} into {base} on {self.name}",
            lambda: self._domain.blockCommit(disk, base, top, bandwidth, flags),
        )

    def block_pull(self, disk: str, base: str | None, bandwidth: int) -> None:
        """Stream the data above ``base`` (None: all of it) into the active top."""
        self._call(
            f"pulling into {disk} of {self.name}",
            lambda: self._domain.blockRebase(
                disk, base, bandwidth, libvirt.VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES
            ),
        )

    def block_copy(
        self, disk: str, destination_xml: str, bandwidth: int, *, shallow: bool,
        synchronous_writes: bool,
    ) -> None:
        """Mirror ``disk`` into a destination the caller created (REUSE_EXT).

        TRANSIENT_JOB: libvirt 11.3 refuses a copy of a persistent domain without it; the copy
        still survives a restart of libvirt, and a pivot still updates the persistent XML.
        """
        flags = (
            libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
        )
        if shallow:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW
        if synchronous_writes:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES
        params = {libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: bandwidth} if bandwidth else {}
        self._call(
            f"copying {disk} of {self.name}",
            lambda: self._domain.blockCopy(disk, destination_xml, params, flags),
        )

    def block_job_abort(self, disk: str, *, pivot: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
        action = "pivoting" if pivot else "aborting the job of"
        self._call(f"{action} {self.name}/{disk}", lambda: self._domain.blockJobAbort(disk, flags))

    def block_job_set_speed(self, disk: str, bandwidth: int) -> None:
        self._call(
            f"setting the job speed of {self.name}/{disk}",
            lambda: self._domain.blockJobSetSpeed(
                disk, bandwidth, libvirt.VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES
            ),
        )

    def block_job_info(self, disk: str) -> BlockJobInfo | None:
        """The block job on ``disk``, or None when libvirt reports none."""
        info = self._call(
            f"reading the block job of {self.name}/{disk}",
            lambda: self._domain.blockJobInfo(
                disk, libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES
            ),
        )
        if not info:
            return None
        return BlockJobInfo(
            int(info["type"]), int(info["cur"]), int(info["end"]), int(info["bandwidth"])
        )

    def backup_begin(self, backup_xml: str, checkpoint_xml: str | None, *,
                     reuse_external: bool = False) -> None:
        """``reuse_external``: the scratch (pull) or target (push) images exist already,
        created by blockplane; libvirt uses them as they are and never deletes them."""
        flags = libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL if reuse_external else 0
        self._call(
            f"starting a backup of {self.name}",
            lambda: self._domain.backupBegin(backup_xml, checkpoint_xml, flags),
        )

    def backup_description(self) -> str | None:
        """libvirt's ``<domainbackup>`` of the running backup job, or None when none runs."""
        try:
            return self._call(f"reading the backup of {self.name}",
                              lambda: str(self._domain.backupGetXMLDesc(0)))
        except HypervisorError as error:
            if error.details.get("libvirt_code") == libvirt.VIR_ERR_NO_DOMAIN_BACKUP:
                return None
            raise

    def job_stats(self) -> dict[str, Any]:
        """Statistics of the running domain job (a pull backup's ``disk_temp_used`` and
        ``disk_temp_total``: the bytes its scratch images hold, and their virtual sizes)."""
        return dict(self._call(f"reading the job of {self.name}",
                               lambda: self._domain.jobStats(0)))

    def redefine_checkpoint(self, checkpoint_xml: str) -> None:
        """Define a checkpoint's metadata again (its bitmaps stay where they are), e.g. after
        libvirt lost it; not validated, so that a broken one is listed as such."""
        self._call(
            f"redefining a checkpoint of {self.name}",
            lambda: self._domain.checkpointCreateXML(
                checkpoint_xml, libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE),
        )

    def fs_freeze(self) -> int:
        """Freeze the guest's filesystems through the guest agent; how many were frozen."""
        return int(self._call(f"freezing the filesystems of {self.name}",
                              lambda: self._domain.fsFreeze(None, 0), kind=CallKind.AGENT,
                              timeout_s=AGENT_COMMAND_TIMEOUT_S + AGENT_REPLY_GRACE_S))

    def fs_thaw(self) -> int:
        """Thaw them again (nothing to do, and no error, when none is frozen)."""
        return int(self._call(f"thawing the filesystems of {self.name}",
                              lambda: self._domain.fsThaw(None, 0), kind=CallKind.AGENT,
                              timeout_s=AGENT_COMMAND_TIMEOUT_S + AGENT_REPLY_GRACE_S))

    def domain_job(self) -> tuple[int, int]:
        """The running domain job (a backup) as (processed, total) bytes; (0, 0) if none.

        Raises nothing when no job runs: callers test ``domain_job_active``.
        """
        stats = self._call(f"reading the job of {self.name}", lambda: self._domain.jobStats(0))
        return int(stats.get("disk_processed", 0)), int(stats.get("disk_total", 0))

    def domain_job_active(self) -> bool:
        job_type = self._call(f"reading the job of {self.name}", self._domain.jobInfo)[0]
        return bool(job_type != libvirt.VIR_DOMAIN_JOB_NONE)

    def completed_job(self) -> dict[str, Any]:
        """Statistics of the last domain job that ended (empty after libvirt restarted)."""
        # Kept: an agent killed right after reading must find the outcome again.
        flags = (libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                 | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
        return dict(self._call(f"reading the completed job of {self.name}",
                               lambda: self._domain.jobStats(flags)))

    def abort_job(self) -> None:
        self._call(f"aborting the job of {self.name}", lambda: self._domain.abortJob())

    def checkpoint_names(self) -> list[str]:
        return self._call(
            f"listing checkpoints of {self.name}",
            lambda: [str(checkpoint.getName()) for checkpoint in self._domain.listAllCheckpoints()],
        )

    def checkpoint_documents(self, *, with_sizes: bool) -> list[str]:
        """Each checkpoint's ``<domaincheckpoint>`` (without its domain copy), parents first.

        ``with_sizes`` asks QEMU how many bytes each bitmap marks dirty; only a running VM can.
        """
        flags = libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN
        if with_sizes:
            flags |= libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE

        def documents() -> list[str]:
            checkpoints = self._domain.listAllCheckpoints(
                libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
            return [str(checkpoint.getXMLDesc(flags)) for checkpoint in checkpoints]

        return self._call(f"listing checkpoints of {self.name}", documents)

    def delete_checkpoint(self, name: str, *, metadata_only: bool = False) -> None:
        """Delete checkpoint ``name``: libvirt merges its bitmaps into its parent's (or drops
        them when it has none), so the checkpoints after it stay exact. ``metadata_only``:
        forget it and leave the bitmaps alone (for one whose bitmaps are gone: libvirt refuses
        the full delete, "bitmap ... not found in backing chain")."""
        flags = libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY if metadata_only else 0
        self._call(
            f"deleting checkpoint {name} of {self.name}",
            lambda: self._domain.checkpointLookupByName(name, 0).delete(flags),
        )


@dataclass(frozen=True)
class BlockJobInfo:
    """``blockJobInfo``: libvirt's job type number, progress and bandwidth (bytes/s)."""

    job_type: int
    cur: int
    end: int
    bandwidth: int


# virDomainJobOperation of a backup, as ``completed_job()["operation"]`` reports it.
JOB_OPERATION_BACKUP = libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP


def _decode(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def _affect(live: bool, config: bool) -> int:
    return (AFFECT_LIVE if live else 0) | (AFFECT_CONFIG if config else 0)


# libvirt's numbers for an ENOSPC pause, for callers that read them from bulk stats
# (``state.state``/``state.reason``), ``DomainState.reason`` or ``disk_errors()``.
PAUSED_STATE = libvirt.VIR_DOMAIN_PAUSED
PAUSED_IOERROR_REASON = libvirt.VIR_DOMAIN_PAUSED_IOERROR
PAUSED_UNKNOWN_REASON = libvirt.VIR_DOMAIN_PAUSED_UNKNOWN
DISK_ERROR_NO_SPACE = libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE
IO_ERROR_ACTION_PAUSE = libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE
