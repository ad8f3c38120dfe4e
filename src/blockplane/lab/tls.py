"""The lab's CA and each host's server certificate, made with the ``openssl`` command.

The CA signs one certificate per host whose subject alternative names are the host's address
and name, so a peer that pins the lab CA (``--ca-file``) can verify ``https://ADDRESS:8640``.
Certificates carry the key identifiers and key usages that strict verifiers (Python 3.13's
default ``VERIFY_X509_STRICT``) require. Keys are written 0600. Owns nothing else.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from blockplane.errors import OperationFailed

DAYS = "30"
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class CertificateFiles:
    certificate: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise OperationFailed(
            f"openssl {args[0]} failed: {result.stderr.strip()}", code="lab.tls_failed"
        )


def make_ca(directory: Path) -> CertificateFiles:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = CertificateFiles(directory / "ca.pem", directory / "ca.key")
    _openssl(
        "req", "-x509", *CURVE, "-keyout", str(ca.key), "-out", str(ca.certificate),
        "-days", DAYS, "-subj", "/CN=blockplane lab CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip
    os.chmod(ca.key, 0o600)
    os.chmod(ca.certificate, 0o644)
    return ca


def make_host_certificate(
    ca: CertificateFiles, directory: Path, name: str, address: str
) -> CertificateFiles:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    issued = CertificateFiles(directory / "agent.pem", directory / "agent.key")
    request = directory / "agent.csr"
    extensions = directory / "agent.ext"
    extensions.write_text(
        f"subjectAltName = IP:{address}, DNS:{name}\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth, clientAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    _openssl(
        "req", "-new", *CURVE, "-keyout", str(issued.key), "-out", str(request),
        "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.certificate),
        "-CAkey", str(ca.key), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
        "-days", DAYS, "-extfile", str(extensions), "-out", str(issued.certificate),
        cwd=directory,
    )  # fmt: skip
    request.unlink()
    extensions.unlink()
    os.chmod(issued.key, 0o600)
    return issued
