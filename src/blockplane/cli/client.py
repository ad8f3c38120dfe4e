"""The CLI's client of the agent: HTTP over the UNIX socket, starting the agent if needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from blockplane.config import Settings, read_token
from blockplane.errors import StateUnavailable
from blockplane.home import ensure_room_to_start

START_TIMEOUT_S = 60.0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3
#: Codes whose exit status is not their HTTP status class's: a peer agent that cannot be reached
#: is "not reachable" (3), as the local agent is.
EXIT_BY_CODE = {"peer.unreachable": EXIT_UNREACHABLE}


class CLIError(Exception):
    def __init__(self, message: str, exit_code: int, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code


#: How much longer than the request's deadline the CLI waits for the agent's answer (the agent
#: answers by its deadline plus a few seconds, whatever the request waits on).
ANSWER_GRACE_S = 15.0
#: The longest default deadline the agent gives a request (see api/request_deadlines.py).
LONGEST_DEFAULT_DEADLINE_S = 130.0


@dataclass
class AgentClient:
    settings: Settings
    autostart: bool = True
    #: ``--timeout``: the deadline asked of the agent for each request (None: its defaults).
    request_timeout_s: float | None = None

    def _client(self, request_timeout_s: float | None = None) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.settings.paths.socket))
        headers = {}
        token = read_token(self.settings.paths.token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        deadline = request_timeout_s or self.request_timeout_s
        if deadline is not None:
            headers["Request-Timeout"] = f"{deadline:g}"
        return httpx.Client(
            transport=transport,
            base_url="http://blockplane",
            headers=headers,
            timeout=(deadline or LONGEST_DEFAULT_DEADLINE_S) + ANSWER_GRACE_S,
        )

    def is_up(self) -> bool:
        try:
            with self._client() as client:
                return client.get("/v1/health", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def ensure_running(self) -> None:
        if self.is_up():
            return
        if not self.autostart:
            raise CLIError(
                f"the blockplane agent is not running (socket {self.settings.paths.socket}); "
                "start it with `blockplane agent start`",
                EXIT_UNREACHABLE,
            )
        start_agent(self.settings)

    def request(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None,
        **params: Any,
    ) -> Any:
        """``timeout_s``: this request's deadline when the command knows better than the
        default (``--timeout`` still wins)."""
        self.ensure_running()
        query = {key: value for key, value in params.items() if value is not None}
        try:
            with self._client(self.request_timeout_s or timeout_s) as client:
                response = client.request(method, path, json=body, params=query)
        except httpx.TimeoutException as error:
            raise CLIError(f"the agent did not answer in time: {error}", EXIT_FAILED,
                           "timeout.agent") from error
        except httpx.TransportError as error:
            raise CLIError(f"the agent did not answer: {error}", EXIT_UNREACHABLE) from error
        return _decode(response)

    def text(self, path: str) -> str:
        self.ensure_running()
        with self._client() as client:
            response = client.get(path)
        if response.status_code >= 400:
            _decode(response)
        return response.text

    def stream_lines(self, path: str, **params: Any) -> Iterator[str]:
        self.ensure_running()
        query = {key: value for key, value in params.items() if value is not None}
        with (
            self._client() as client,
            client.stream("GET", path, params=query, timeout=None) as response,
        ):
            if response.status_code >= 400:
                response.read()
                _decode(response)
            yield from response.iter_lines()


def decode_answer(response: httpx.Response) -> Any:
    """An answer's JSON, or CLIError with the problem's code and the matching exit status."""
    return _decode(response)


def _decode(response: httpx.Response) -> Any:
    if response.status_code < 400:
        return response.json() if response.content else None
    try:
        problem = response.json()
        message = problem.get("detail") or problem.get("title") or response.text
        code = problem.get("code", "")
    except ValueError:
        message, code = response.text, ""
    exit_code = EXIT_INVALID if response.status_code < 500 else EXIT_FAILED
    raise CLIError(str(message), EXIT_BY_CODE.get(code, exit_code), code)


def agent_command(settings: Settings) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "blockplane",
        "--home",
        str(settings.paths.home),
        "--libvirt-uri",
        settings.libvirt_uri,
        "--accel",
        settings.accel,
        "agent",
        "run",
    ]
    if settings.listen:
        command += ["--listen", settings.listen]
    if settings.tls_cert is not None and settings.tls_key is not None:
        command += ["--tls-cert", str(settings.tls_cert), "--tls-key", str(settings.tls_key)]
    return command


def start_agent(settings: Settings) -> int:
    paths = settings.paths
    try:  # here too: on a full home the agent could not even log why it refused
        ensure_room_to_start(paths, settings.libvirt_uri.startswith("qemu:///embed"))
    except StateUnavailable as error:
        raise CLIError(error.message, EXIT_FAILED, error.code) from None
    paths.home.mkdir(mode=0o711, parents=True, exist_ok=True)
    with open(paths.log_file, "ab") as log:
        process = subprocess.Popen(
            agent_command(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = AgentClient(settings, autostart=False)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if client.is_up():
            return process.pid
        if process.poll() is not None:
            raise CLIError(
                f"the agent exited with status {process.returncode} while starting:\n"
                + _tail(paths.log_file),
                EXIT_FAILED,
            )
        time.sleep(0.1)
    raise CLIError("the agent did not answer within 60 s:\n" + _tail(paths.log_file), EXIT_FAILED)


def stop_agent(settings: Settings, timeout_s: float = 30.0) -> bool:
    pid = agent_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def agent_pid(settings: Settings) -> int | None:
    try:
        pid = int(settings.paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def _tail(path: os.PathLike[str], lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def api_path(*segments: str) -> str:
    """Build a /v1 path with every user-given segment percent-encoded (no '/' smuggling).

    Dots are encoded too: httpx removes a literal ``.`` or ``..`` segment, so ``volume delete
    POOL ..`` would otherwise become ``DELETE /v1/pools/POOL``.
    """
    from urllib.parse import quote

    return "/v1/" + "/".join(quote(segment, safe="").replace(".", "%2E")
                             for segment in segments)
