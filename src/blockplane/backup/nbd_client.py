"""A small NBD client (the fixed-newstyle protocol, simple replies) for the reference pull client.

Backup software reads a pull backup over NBD: the extents that changed come from ``nbdinfo
--map=qemu:dirty-bitmap:...`` (libnbd-bin), and their bytes from the export. nbdcopy copies a
whole export, not a list of extents, and Debian's python3-libnbd is built for the system Python
only, so reading (and writing) given extents is done here, with the standard library: connect
to a UNIX socket or TCP, ``NBD_OPT_GO`` to an export, then ``READ``, ``WRITE``, ``FLUSH`` and
``DISC`` one request at a time. No TLS (``nbdinfo``/``nbdcopy`` take ``nbds://`` URLs). Must not
know anything about backups.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
INFO_EXPORT = 0
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
MAX_REQUEST = 32 << 20


class NbdError(Exception):
    pass


@dataclass(frozen=True)
class NbdAddress:
    export: str
    socket: str | None = None
    host: str | None = None
    port: int = 10809

    @classmethod
    def parse(cls, url: str) -> NbdAddress:
        """``nbd+unix:///EXPORT?socket=PATH`` or ``nbd://HOST[:PORT]/EXPORT``."""
        parsed = urlparse(url)
        export = unquote(parsed.path.lstrip("/"))
        if parsed.scheme == "nbd+unix":
            sockets = parse_qs(parsed.query).get("socket")
            if not sockets:
                raise NbdError(f"{url}: no socket= in the URL")
            return cls(export, socket=sockets[0])
        if parsed.scheme == "nbd":
            return cls(export, host=parsed.hostname, port=parsed.port or 10809)
        raise NbdError(f"{url}: only nbd+unix:// and nbd:// URLs (no TLS) are supported here")


class NbdClient:
    def __init__(self, address: NbdAddress, timeout_s: float = 60.0) -> None:
        if address.socket is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = address.socket
        else:
            self._sock = socket.socket(socket.AF_INET6 if ":" in (address.host or "")
                                       else socket.AF_INET, socket.SOCK_STREAM)
            target = (address.host or "127.0.0.1", address.port)
        self._sock.settimeout(timeout_s)
        self._handle = 0
        try:
            self._sock.connect(target)
            self.size, self.flags = self._negotiate(address.export)
        except BaseException:
            self._sock.close()
            raise
        self.bytes_read = 0
        self.bytes_written = 0

    def _negotiate(self, export: str) -> tuple[int, int]:
        magic, option_magic, handshake = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or option_magic != IHAVEOPT:
            raise NbdError("not a newstyle NBD server")
        if not handshake & FLAG_FIXED_NEWSTYLE:
            raise NbdError("the NBD server is not fixed-newstyle")
        no_zeroes = handshake & FLAG_NO_ZEROES
        self._sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | no_zeroes))
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self._sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        size = flags = None
        while True:
            magic, _option, kind, length = struct.unpack(">QIII", self._recv(20))
            payload = self._recv(length) if length else b""
            if magic != REPLY_MAGIC:
                raise NbdError("bad option reply from the NBD server")
            if kind & 0x80000000:
                raise NbdError(f"the NBD server refused export {export!r}: "
                               f"{payload[4:].decode(errors='replace') or hex(kind)}")
            if kind == REP_INFO and len(payload) >= 12:
                (info,) = struct.unpack(">H", payload[:2])
                if info == INFO_EXPORT:
                    size, flags = struct.unpack(">QH", payload[2:12])
            elif kind == REP_ACK:
                break
        if size is None or flags is None:
            raise NbdError(f"the NBD server gave no size for export {export!r}")
        return size, flags

    def read(self, offset: int, length: int) -> bytes:
        chunks = []
        while length > 0:
            step = min(length, MAX_REQUEST)
            self._request(CMD_READ, offset, step)
            chunks.append(self._reply(step))
            offset += step
            length -= step
            self.bytes_read += step
        return b"".join(chunks)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            step = view[:MAX_REQUEST]
            self._request(CMD_WRITE, offset, len(step), bytes(step))
            self._reply(0)
            offset += len(step)
            self.bytes_written += len(step)
            view = view[len(step):]

    def flush(self) -> None:
        self._request(CMD_FLUSH, 0, 0)
        self._reply(0)

    def close(self) -> None:
        try:
            self._request(CMD_DISC, 0, 0)
        except OSError:
            pass
        finally:
            self._sock.close()

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, command: int, offset: int, length: int, data: bytes = b"") -> None:
        self._handle += 1
        header = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, command, self._handle, offset, length)
        self._sock.sendall(header + data)

    def _reply(self, length: int) -> bytes:
        magic, error, handle = struct.unpack(">IIQ", self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC or handle != self._handle:
            raise NbdError("unexpected reply from the NBD server")
        if error:
            raise NbdError(f"the NBD server answered error {error}")
        return self._recv(length) if length else b""

    def _recv(self, length: int) -> bytes:
        buffer = bytearray(length)
        view = memoryview(buffer)
        while view:
            received = self._sock.recv_into(view)
            if not received:
                raise NbdError("the NBD server closed the connection")
            view = view[received:]
        return bytes(buffer)
