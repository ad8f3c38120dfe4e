"""``blockplane backup VM ...`` (push or ``--pull``), ``backup stop|show JOB`` and ``restore``.

``backup`` is a group whose default command is ``start``: ``backup web --pull`` means ``backup
start web --pull`` (name it explicitly for a VM called ``stop`` or ``show``).
"""

from __future__ import annotations

import re

import click

from blockplane.backup.restore import RestoreResult
from blockplane.backup.views import PullBackupView
from blockplane.chain.jobs.views import JobView
from blockplane.cli.client import api_path
from blockplane.cli.commands_chain import wait_option
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch
from blockplane.cli.job_wait import wait_for_job
from blockplane.cli.output import console, human_bytes, print_json

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``24h``, ``2d`` -> seconds."""
    found = _DURATION.match(text.strip())
    if found is None or float(found.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration such as 3600, 90m or 24h")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


class BackupGroup(click.Group):
    """A group that runs ``start`` when its first word is not one of its commands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group("backup", cls=BackupGroup)
def backup_group() -> None:
    """Back up a VM: push (--dest DIR) or pull (--pull: NBD exports for backup software)."""


@backup_group.command("start")
@click.argument("vm")
@click.option("--dest", help="Push: a directory inside a pool for <target>.qcow2 files.")
@click.option("--pull", is_flag=True,
              help="Pull: export each disk over NBD at this point in time until `backup stop`.")
@click.option("--incremental", metavar="CHECKPOINT|auto",
              help="Only what changed since CHECKPOINT (pull: `auto` = since the newest one, "
                   "or fully where that cannot be).")
@click.option("--disk", "disks", multiple=True, metavar="TARGET",
              help="Disk to back up (repeatable; default every managed disk).")
@click.option("--scratch-pool", metavar="POOL",
              help="Pull: pool for the scratch images (default each disk's own pool).")
@click.option("--quiesce", is_flag=True,
              help="Pull: freeze the guest's filesystems for the point in time (guest agent).")
@click.option("--require-quiesce", is_flag=True,
              help="Pull: fail if the guest's filesystems cannot be frozen.")
@click.option("--export-timeout", metavar="DURATION", default="24h", show_default=True,
              help="Pull: end the export after this long (e.g. 3600, 90m, 24h).")
@click.option("--tcp", is_flag=True,
              help="Pull: serve over TCP with TLS on the agent's listener address.")
@wait_option
@json_option
@pass_cli
def backup_start(context: CLIContext, vm: str, dest: str | None, pull: bool,
                 incremental: str | None, disks: tuple[str, ...], scratch_pool: str | None,
                 quiesce: bool, require_quiesce: bool, export_timeout: str, tcp: bool,
                 wait: bool, as_json: bool) -> None:
    """Push a full or incremental backup, or start a pull backup; each creates a checkpoint,
    the base of the next incremental."""
    if pull == (dest is not None):
        raise click.UsageError("give --dest DIR (push) or --pull")
    if not pull:
        if scratch_pool or quiesce or require_quiesce or tcp:
            raise click.UsageError("--scratch-pool, --quiesce, --require-quiesce and --tcp "
                                   "are for --pull")
        job = fetch(context.client, JobView, "POST", api_path("vms", vm, "backup"),
                    {"dest": dest, "incremental": incremental, "disks": list(disks)})
        if wait:
            raise click.exceptions.Exit(wait_for_job(context.client, job))
        if as_json:
            print_json(job)
        else:
            console.print(f"job {job.id}: backup of {vm} ({job.phase})")
        return
    if wait:
        raise click.UsageError("a pull backup runs until `backup stop JOB`: no --wait")
    answer = fetch(
        context.client, PullBackupView, "POST", api_path("vms", vm, "backup", "pull"),
        {"incremental": incremental, "disks": list(disks), "scratch_pool": scratch_pool,
         "quiesce": quiesce, "require_quiesce": require_quiesce,
         "timeout": parse_duration(export_timeout), "tcp": tcp})
    if as_json:
        print_json(answer)
    else:
        _print_pull(answer)


@backup_group.command("stop")
@click.argument("job_id")
@json_option
@pass_cli
def backup_stop(context: CLIContext, job_id: str, as_json: bool) -> None:
    """End a pull backup's export; its scratch images are deleted."""
    answer = fetch(context.client, PullBackupView, "POST", api_path("jobs", job_id, "stop"))
    if as_json:
        print_json(answer)
    else:
        console.print(f"job {job_id}: {answer.phase}")


@backup_group.command("show")
@click.argument("job_id")
@json_option
@pass_cli
def backup_show(context: CLIContext, job_id: str, as_json: bool) -> None:
    """A pull backup: its exports and how full its scratch images are."""
    answer = fetch(context.client, PullBackupView, "GET", api_path("pull-backups", job_id))
    if as_json:
        print_json(answer)
    else:
        _print_pull(answer)


def _print_pull(answer: PullBackupView) -> None:
    base = f"incremental from {answer.incremental}" if answer.incremental else "full"
    console.print(f"job {answer.job}: pull backup of {answer.vm} ({base}), "
                  f"{answer.phase}; creates checkpoint {answer.checkpoint}")
    if answer.fallback:
        console.print(f"note: {answer.fallback}")
    if answer.quiesce_error:
        console.print(f"not quiesced: {answer.quiesce_error}")
    for disk in answer.disks:
        bitmap = f"  changed extents: {disk.bitmap}" if disk.bitmap else ""
        console.print(f"  {disk.target} ({disk.mode}, {human_bytes(disk.size)}): "
                      f"{disk.url}{bitmap}", soft_wrap=True)
    if answer.scratch is not None:
        console.print(f"scratch: {human_bytes(answer.scratch.used)} of "
                      f"{human_bytes(answer.scratch.total)}")


@click.command("restore")
@click.option("--from", "sources", multiple=True, required=True, metavar="DIR",
              help="A backup directory: the full backup first, then its incrementals in order.")
@click.option("--pool", required=True, help="Pool of the restored volume.")
@click.option("--name", required=True, help="Name of the restored volume.")
@click.option("--disk", metavar="TARGET", help="Disk to restore when the backups hold several.")
@click.option("--attach", metavar="VM", help="Attach the restored volume to this VM.")
@json_option
@pass_cli
def restore_command(context: CLIContext, sources: tuple[str, ...], pool: str, name: str,
                    disk: str | None, attach: str | None, as_json: bool) -> None:
    """Rebuild a volume from a full backup followed by its incrementals."""
    result = fetch(context.client, RestoreResult, "POST", "/v1/restore",
                   {"sources": list(sources), "pool": pool, "name": name, "disk": disk,
                    "attach": attach})
    if as_json:
        print_json(result)
        return
    console.print(f"restored {result.disk} from {len(result.chain)} backup(s) into "
                  f"{result.pool}/{result.volume} ({human_bytes(result.virtual_bytes)}"
                  f"{', thin' if result.thin else ''})")
    console.print(f"sha256 {result.sha256}")
    if result.attached_to:
        console.print(f"attached to {result.attached_to} as {result.attached_as}")
