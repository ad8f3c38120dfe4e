"""Where the API listens: the UNIX socket always, TCP on request, and TLS where it must be.

Owns the rule that a TCP listener outside loopback (127.0.0.0/8, ::1) serves HTTPS only
(``listen.tls_required``), the server's TLS settings (TLS 1.2 or later) and running uvicorn on
the plain UNIX socket and the TLS socket side by side. ``check_listen`` is pure apart from
reading the certificate files, so the CLI runs it before it starts anything. Must not decide
anything about requests: authentication stays in ``auth.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from blockplane.errors import InvalidInput

DEFAULT_TCP_HOST = "127.0.0.1"


@dataclass(frozen=True)
class TCPListener:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name could resolve anywhere: it counts as outside loopback


def check_listen(
    listen: str | None, tls_cert: Path | None = None, tls_key: Path | None = None
) -> TCPListener | None:
    """The TCP listener ``agent run|start`` asked for, or a refusal before anything starts."""
    if (tls_cert is None) != (tls_key is None):
        raise InvalidInput("give both --tls-cert and --tls-key", code="listen.invalid")
    if listen is None:
        if tls_cert is not None:
            raise InvalidInput(
                "--tls-cert and --tls-key secure the TCP listener: give --listen HOST:PORT too",
                code="listen.invalid",
            )
        return None
    host, port = _host_port(listen)
    if tls_cert is None or tls_key is None:
        if not is_loopback(host):
            raise InvalidInput(
                f"--listen {listen} is outside loopback (127.0.0.0/8, ::1): the API is served "
                "there only over TLS; give --tls-cert and --tls-key",
                code="listen.tls_required",
            )
        return TCPListener(host, port)
    server_tls_context(tls_cert, tls_key)
    return TCPListener(host, port, tls_cert, tls_key)


def _host_port(listen: str) -> tuple[str, int]:
    host, separator, port_text = listen.rpartition(":")
    host = host.strip("[]") or DEFAULT_TCP_HOST
    if not separator or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidInput(
            f"--listen {listen!r} is not HOST:PORT with a port 1-65535", code="listen.invalid"
        )
    if any(character.isspace() or character in "/[]" for character in host):
        raise InvalidInput(f"--listen {listen!r} has no valid host", code="listen.invalid")
    return host, int(port_text)


def server_tls_context(tls_cert: Path, tls_key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls_cert), str(tls_key))
    except (OSError, ssl.SSLError) as error:
        raise InvalidInput(
            f"cannot serve TLS with --tls-cert {tls_cert} and --tls-key {tls_key}: {error}",
            code="listen.tls_invalid",
        ) from None
    return context


def tcp_socket(listener: TCPListener) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((listener.host, listener.port))
    tcp.listen(128)
    return tcp


def _config(app: ASGIApp, tls: ssl.SSLContext | None = None) -> uvicorn.Config:
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    config.load()
    config.ssl = tls  # after load(): uvicorn would otherwise build its own, without TLS 1.2+
    return config


class _TLSServer(uvicorn.Server):
    """The TLS listener's server: it stops when the UNIX socket's server does, which owns the
    signal handlers (uvicorn's ``capture_signals`` would otherwise be entered twice)."""

    def __init__(self, config: uvicorn.Config, leader: uvicorn.Server) -> None:
        super().__init__(config)
        self._leader = leader

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def on_tick(self, counter: int) -> bool:
        return self._leader.should_exit or await super().on_tick(counter)


async def serve_api(
    app: ASGIApp, unix: socket.socket, tcp: socket.socket | None, listener: TCPListener | None
) -> None:
    """Serve until a signal: plain HTTP on ``unix`` (and on a loopback ``tcp`` without TLS),
    HTTPS on ``tcp`` when the listener has a certificate."""
    main = uvicorn.Server(_config(app))
    if tcp is None or listener is None or listener.tls_cert is None or listener.tls_key is None:
        await main.serve(sockets=[unix] if tcp is None else [unix, tcp])
        return
    secure = _TLSServer(_config(app, server_tls_context(listener.tls_cert, listener.tls_key)), main)
    tls_task = asyncio.create_task(secure.serve(sockets=[tcp]))
    # A TLS listener that stopped on its own must not leave a half-served agent behind.
    tls_task.add_done_callback(lambda _task: setattr(main, "should_exit", True))
    try:
        await main.serve(sockets=[unix])
    finally:
        secure.should_exit = True
        await asyncio.gather(tls_task, return_exceptions=True)
