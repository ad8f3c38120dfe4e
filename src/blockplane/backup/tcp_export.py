"""Pull-backup exports over TCP with TLS (``backup VM --pull --tcp``), for a backup server on
another host.

libvirt serves a pull backup on TCP when the backup XML says ``<server transport='tcp'
name=HOST port=PORT tls='yes'/>``; it needs the port given (it allocates none), and QEMU reads
the x509 credentials from libvirt's ``backup_tls_x509_cert_dir``: ``ca-cert.pem``,
``server-cert.pem``, ``server-key.pem``, the client's certificate verified against the CA by
default (``backup_tls_x509_verify``). What blockplane does:
- it exports over TCP only when the agent listens on TCP (``--listen HOST:PORT``; the export
  binds the same HOST) and ``$BLOCKPLANE_HOME/nbd-tls/`` holds those three files (the operator
  puts them there: the CA that signs the backup clients' certificates, and this host's
  certificate and key); otherwise ``backup.tcp_unavailable`` (exit 2);
- with the embedded libvirt, whose default certificate directory is ``<root>/etc/pki/qemu``
  (unless ``/etc/pki/libvirt-backup`` exists), it copies them there before each export, the
  key readable by QEMU's user only;
- with the system daemon it cannot write ``/etc/libvirt/qemu.conf``: the operator sets
  ``backup_tls_x509_cert_dir`` (or ``/etc/pki/libvirt-backup``); a daemon without them fails
  the start, and the job is ``failed`` with libvirt's words;
- the port is the first free one of ``PORTS`` on HOST.
Must not call libvirt.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from blockplane.backup.records import TcpExport
from blockplane.errors import Conflict, InvalidInput

PORTS = range(10809, 10909)
FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
SYSTEM_BACKUP_DIR = Path("/etc/pki/libvirt-backup")


class TcpExports:
    def __init__(self, home: Path, listen: str | None, embed_root: Path | None) -> None:
        self._source = home / "nbd-tls"
        self._host = listen.rpartition(":")[0].strip("[]") if listen else None
        self._embed_root = embed_root

    def endpoint(self, job_id: str, owner: tuple[int, int] | None) -> TcpExport:
        """Where the export of ``job_id`` will listen; its credentials in place, the key
        readable by ``owner`` (QEMU's uid and gid) alone."""
        if self._host is None:
            raise InvalidInput("an export over TCP needs the agent's TCP listener (agent start "
                               "--listen HOST:PORT ...): the export binds its HOST",
                               code="backup.tcp_unavailable")
        missing = [name for name in FILES if not (self._source / name).is_file()]
        if missing:
            raise InvalidInput(f"an export over TCP needs TLS credentials: {self._source} lacks "
                               f"{', '.join(missing)}", code="backup.tcp_unavailable")
        if self._embed_root is not None and not SYSTEM_BACKUP_DIR.exists():
            self._install(self._embed_root / "etc" / "pki" / "qemu", owner)
        return TcpExport(self._host, self._free_port(), tls=True)

    def _install(self, directory: Path, owner: tuple[int, int] | None) -> None:
        """The credentials where QEMU (as its own user) reads them: the key for it alone."""
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        assert self._embed_root is not None
        for parent in (self._embed_root / "etc", self._embed_root / "etc" / "pki"):
            # QEMU must traverse to the directory; traversing lists nothing (qemu.conf is 0600).
            os.chmod(parent, os.stat(parent).st_mode & 0o777 | 0o111)
        for name in FILES:
            target = directory / name
            temporary = target.with_suffix(".tmp")
            shutil.copyfile(self._source / name, temporary)
            os.chmod(temporary, 0o400 if name.endswith("key.pem") else 0o444)
            if owner is not None and name.endswith("key.pem"):
                os.chown(temporary, *owner)
            os.replace(temporary, target)

    def _free_port(self) -> int:
        assert self._host is not None
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        for port in PORTS:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((self._host, port))
                except OSError:
                    continue
                return port
        raise Conflict(f"no free port for an NBD export on {self._host} "
                       f"({PORTS.start}-{PORTS.stop - 1})", code="backup.no_port")
