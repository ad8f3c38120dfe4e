"""``--listen`` outside loopback needs TLS; bad listener options are refused before a start."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from blockplane.api.listeners import TCPListener, check_listen, is_loopback
from blockplane.errors import InvalidInput


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.21", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("128.0.0.1", False),
        ("hostb.example", False),
    ],
)
def test_loopback_is_127_8_and_ipv6_one(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("listen", ["127.0.0.1:8640", "127.0.0.21:1", "[::1]:8640", ":8640"])
def test_loopback_without_tls_is_allowed(listen: str) -> None:
    listener = check_listen(listen)
    assert listener is not None and not listener.tls and listener.url.startswith("http://")


@pytest.mark.parametrize("listen", ["0.0.0.0:8640", "[::]:8640", "192.168.1.5:8640",
                                    "hostb:8640"])
def test_outside_loopback_without_tls_is_refused(listen: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_listen(listen)
    assert (refused.value.code, refused.value.exit_code) == ("listen.tls_required", 2)


@pytest.mark.parametrize("listen", ["8640", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000",
                                    "127.0.0.1:http", "a b:1"])
def test_malformed_listen_is_refused(listen: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_listen(listen)
    assert refused.value.code == "listen.invalid"


def test_tls_options_come_in_pairs_and_with_listen(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    for arguments in ((None, cert, None), (None, None, key), ("0.0.0.0:1", cert, None),
                      (None, cert, key)):
        with pytest.raises(InvalidInput) as refused:
            check_listen(*arguments)
        assert refused.value.code == "listen.invalid"
    assert check_listen(None) is None


def test_unreadable_or_mismatched_tls_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as missing:
        check_listen("0.0.0.0:8640", tmp_path / "none.pem", tmp_path / "none.key")
    assert missing.value.code == "listen.tls_invalid"
    first, second = _self_signed(tmp_path, "a"), _self_signed(tmp_path, "b")
    with pytest.raises(InvalidInput) as mismatched:
        check_listen("0.0.0.0:8640", first[0], second[1])
    assert mismatched.value.code == "listen.tls_invalid"


def test_a_certificate_and_its_key_serve_tls_anywhere(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "a")
    listener = check_listen("0.0.0.0:8640", cert, key)
    assert listener == TCPListener("0.0.0.0", 8640, cert, key)
    assert listener.url == "https://0.0.0.0:8640"
    from blockplane.api.listeners import server_tls_context

    assert server_tls_context(cert, key).minimum_version >= ssl.TLSVersion.TLSv1_2


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key
