"""Peer names, URLs, tokens and CA bundles are checked before anything is contacted."""

from __future__ import annotations

import pytest

from blockplane.errors import InvalidInput
from blockplane.migration.peer_address import (
    PeerAddress,
    certificates_in,
    fingerprint,
    parse_peer_url,
    pinned_context,
    validate_peer_name,
    validate_token,
)
from blockplane.migration.peer_errors import PeerInsecure, PeerInvalid


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://127.0.0.21:8640", "https://127.0.0.21:8640"),
        ("https://127.0.0.21:8640/", "https://127.0.0.21:8640"),
        ("HTTPS://Host-B.example:9000", "https://host-b.example:9000"),
        ("https://[::1]:8640", "https://[::1]:8640"),
        ("https://hostb", "https://hostb:443"),
    ],
)
def test_https_urls_are_accepted_in_normal_form(url: str, normal: str) -> None:
    assert parse_peer_url(url).url == normal


@pytest.mark.parametrize("url", ["http://127.0.0.21:8640", "HTTP://hostb:80", "http://[::1]:1"])
def test_plain_http_is_refused_as_insecure(url: str) -> None:
    with pytest.raises(PeerInsecure) as refused:
        parse_peer_url(url)
    assert refused.value.code == "peer.insecure"
    assert refused.value.exit_code == 2


@pytest.mark.parametrize(
    "url",
    [
        "",
        "127.0.0.21:8640",
        "ftp://hostb:21",
        "https://",
        "https://:8640",
        "https://hostb:0",
        "https://hostb:99999",
        "https://hostb:port",
        "https://user:secret@hostb:8640",
        "https://hostb:8640/v1",
        "https://hostb:8640/?x=1",
        "https://hostb:8640#frag",
        "https://host b:8640",
        "https://hostb:8640\n",
        "https://host_b:8640",
        "https://1.2.3:8640",
        "https://-bad-.example:8640",
        "https://" + "a" * 2100,
    ],
)
def test_other_urls_are_refused_as_invalid(url: str) -> None:
    with pytest.raises(PeerInvalid) as refused:
        parse_peer_url(url)
    assert refused.value.code == "peer.invalid"
    assert refused.value.exit_code == 2


def test_a_non_string_url_is_refused() -> None:
    with pytest.raises(PeerInvalid):
        parse_peer_url(None)


def test_ipv6_hosts_keep_their_brackets_only_in_the_url() -> None:
    address = parse_peer_url("https://[fe80::1]:8640")
    assert address == PeerAddress("fe80::1", 8640)


@pytest.mark.parametrize("name", ["hostB", "host-2", "lab.host_3"])
def test_peer_names_like_other_names(name: str) -> None:
    assert validate_peer_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-x", "x" * 65, "a..b", None])
def test_bad_peer_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_peer_name(name)
    assert refused.value.code == "peer.name_invalid"


def test_a_token_is_visible_ascii_and_is_never_echoed() -> None:
    assert validate_token("abc-DEF_123") == "abc-DEF_123"
    for bad in ("", "two words", "line\nbreak", "ümlaut", "x" * 4097, None):
        with pytest.raises(PeerInvalid) as refused:
            validate_token(bad)
        if isinstance(bad, str) and bad:
            assert bad not in refused.value.message


def test_a_ca_bundle_needs_a_certificate() -> None:
    garbled = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----"
    for bad in ("", "not a certificate", garbled, None, "x" * (256 * 1024 + 1)):
        with pytest.raises(PeerInvalid):
            certificates_in(bad)
    with pytest.raises(PeerInvalid):
        pinned_context("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_fingerprints_are_printed_as_openssl_prints_them() -> None:
    value = fingerprint(b"")
    assert value.startswith("SHA256:E3:B0:C4:42:98:FC")
    assert len(value.split(":")) == 1 + 32


def test_without_a_pinned_ca_the_system_store_is_used_with_tls_1_2_at_least() -> None:
    import ssl

    context = pinned_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
