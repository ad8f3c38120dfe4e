"""Running storage commands (losetup, blockdev, lvcreate ...) behind a small injectable seam.

Owns the ``CommandRunner`` protocol, the real ``SubprocessRunner`` and the mapping of a failed
command to ``OperationFailed`` with its stderr. Must not build command lines for any backend, and
never runs a shell: arguments are always a list.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from blockplane.errors import OperationFailed

DEFAULT_TIMEOUT_S = 60.0
# LVM prints "File descriptor N leaked" warnings to stderr when the agent holds fds open, and
# localized messages would break the few stderr matches the LVM backend makes.
_QUIET_ENV = {"LC_ALL": "C", "LANG": "C", "LVM_SUPPRESS_FD_WARNINGS": "1"}


@dataclass(frozen=True)
class CommandResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandRunner(Protocol):
    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        """Run ``args``; with ``check`` a non-zero exit raises OperationFailed."""
        ...


def check_result(result: CommandResult) -> CommandResult:
    """Return ``result`` if the command succeeded, else raise OperationFailed quoting stderr."""
    if result.ok:
        return result
    detail = result.stderr.strip() or result.stdout.strip() or "no output"
    raise OperationFailed(
        f"{shlex.join(result.args)} failed with exit status {result.returncode}: {detail}",
        code="storage.command_failed",
        command=list(result.args),
        returncode=result.returncode,
        stderr=result.stderr,
    )


class SubprocessRunner:
    """Runs commands with ``subprocess.run`` (no shell), C locale and a timeout."""

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None
    ) -> None:
        self._timeout = timeout
        self._env = {**os.environ, **_QUIET_ENV, **(env or {})}

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        argv = tuple(args)
        limit = self._timeout if timeout is None else timeout
        try:
            # S603: argv is a list built by the backends from validated names, never a shell line.
            completed = subprocess.run(
                argv,
                check=False,
                capture_output=True,
                text=True,
                timeout=limit,
                env=self._env,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError as error:
            raise OperationFailed(
                f"{argv[0]} is not installed or not on PATH: {error.strerror}",
                code="storage.command_missing",
                command=list(argv),
            ) from error
        except subprocess.TimeoutExpired as error:
            raise OperationFailed(
                f"{shlex.join(argv)} did not finish within {limit:g} s",
                code="storage.command_timeout",
                command=list(argv),
            ) from error
        result = CommandResult(argv, completed.returncode, completed.stdout, completed.stderr)
        return check_result(result) if check else result
