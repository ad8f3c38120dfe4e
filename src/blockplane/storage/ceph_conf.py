"""What a ceph.conf tells a client: its monitors and where the user's keyring is, and the key.

Owns reading them: ``ceph-conf`` (from ceph-common) resolves the options the way every Ceph
client does (sections, ``$name`` expansion, the default keyring search path); the ``mon host``
value and the keyring file are parsed here. The monitors become libvirt's ``<host>`` elements;
the key goes only into a libvirt secret (``hypervisor.secrets``).

Must never put a key in a message, a log or a return value other than ``read_key``'s, and must
not decide which user or pool to use.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import os
import re
import subprocess
from pathlib import Path

from blockplane.model.ceph import Monitor
from blockplane.storage.ceph_errors import CephConfInvalid

CEPH_CONF_TIMEOUT_S = 10.0
DEFAULT_V2_PORT = 3300
DEFAULT_V1_PORT = 6789
_ADDRESS = re.compile(r"^(?:(?P<proto>v[12]):)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+)"
                      r"(?::(?P<port>\d{1,5}))?(?:/\d+)?$")


def parse_mon_host(value: str) -> tuple[Monitor, ...]:
    """``mon host``: ``[v2:IP:3300,v1:IP:6789] [v2:...]``, ``IP:PORT,IP``, or names.

    One address per monitor, the msgr v2 one where a monitor lists both (librados tries v2 first
    on a bare ``IP:PORT``); a bare host keeps no port, so the client tries both defaults.
    """
    monitors: list[Monitor] = []
    for token in _split(value.strip(), " \t,;"):
        vector = token.startswith("[") and token.endswith("]") and (
            token[1:3] in ("v1", "v2"))
        entries = _split(token[1:-1], ",") if vector else [token]
        parsed = [_address(entry) for entry in entries]
        v2 = [monitor for proto, monitor in parsed if proto == "v2"]
        chosen = v2[0] if v2 else parsed[0][1]
        if chosen not in monitors:
            monitors.append(chosen)
    if not monitors:
        raise CephConfInvalid("the ceph.conf names no monitor (mon host is empty)")
    return tuple(monitors)


def _split(text: str, separators: str) -> list[str]:
    """``text`` cut at ``separators`` outside brackets (an IPv6 address is ``[::1]``)."""
    parts, current, depth = [], "", 0
    for character in text:
        depth += {"[": 1, "]": -1}.get(character, 0)
        if depth == 0 and character in separators:
            parts.append(current)
            current = ""
        else:
            current += character
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _address(entry: str) -> tuple[str | None, Monitor]:
    match = _ADDRESS.match(entry)
    if match is None:
        raise CephConfInvalid(f"cannot read the monitor address {entry!r} in mon host")
    proto = match["proto"]
    port = int(match["port"]) if match["port"] else None
    if port is None and proto is not None:
        port = DEFAULT_V1_PORT if proto == "v1" else DEFAULT_V2_PORT
    if port is not None and not 0 < port < 65536:
        raise CephConfInvalid(f"monitor port {port} in mon host is out of range")
    return proto, Monitor(match["host"].strip("[]"), port)


def parse_keyring_key(text: str, entity: str) -> str:
    """The ``key`` of ``[entity]`` in a keyring file's text (checked to be a cephx secret)."""
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    try:
        parser.read_string(text)
    except configparser.Error as error:
        raise CephConfInvalid(f"the keyring is not readable as a keyring: {error.message}") \
            from None
    if not parser.has_section(entity):
        raise CephConfInvalid(f"the keyring holds no [{entity}] section")
    key = parser.get(entity, "key", fallback="").strip().strip('"')
    try:
        if not key or len(base64.b64decode(key, validate=True)) < 12:
            raise ValueError
    except (ValueError, binascii.Error):
        raise CephConfInvalid(f"the [{entity}] key in the keyring is not a cephx key") from None
    return key


def lookup(conf: Path, user: str, option: str) -> str | None:
    """``option`` as a client ``client.USER`` of ``conf`` sees it; None where it is unset."""
    command = ["ceph-conf", "--conf", str(conf), "--name", f"client.{user}", "--lookup", option]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False,
                                   timeout=CEPH_CONF_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CephConfInvalid(f"ceph-conf could not read {conf}: {error}") from None
    if completed.returncode == 1 and not completed.stdout.strip():
        return None  # ceph-conf's "not found"
    if completed.returncode != 0:
        raise CephConfInvalid(f"ceph-conf could not read {conf}: {completed.stderr.strip()}")
    return completed.stdout.strip() or None


def monitors_of(conf: Path, user: str) -> tuple[Monitor, ...]:
    value = lookup(conf, user, "mon_host")
    if value is None:
        raise CephConfInvalid(f"{conf} names no monitor (mon host); DNS SRV lookup is not "
                              "supported: list the monitors in mon host")
    return parse_mon_host(value)


def keyring_of(conf: Path, user: str, keyring: Path | None) -> Path:
    """The keyring file for ``client.USER``: the given one, or the first that exists of the
    ``keyring`` option's comma-separated list (Ceph's own search order)."""
    if keyring is not None:
        candidates = [str(keyring)]
    else:
        value = lookup(conf, user, "keyring") or ""
        candidates = [part.strip() for part in value.split(",") if part.strip()]
    for candidate in candidates:
        if os.access(candidate, os.R_OK):
            return Path(candidate)
    where = ", ".join(candidates) or "(none configured)"
    raise CephConfInvalid(f"no readable keyring for client.{user}: looked in {where}; give "
                          "--ceph-keyring FILE")


def read_key(keyring: Path, user: str) -> bytes:
    """The raw secret of ``client.USER`` (what libvirt's ceph secret holds)."""
    try:
        text = keyring.read_text()
    except OSError as error:
        raise CephConfInvalid(f"cannot read the keyring {keyring}: {error.strerror}") from None
    return base64.b64decode(parse_keyring_key(text, f"client.{user}"))
