"""Peers between two real agents on this machine, each with its own embedded libvirt.

Agent B serves its API over HTTPS on 127.0.0.21 with a certificate from a CA made here with the
``openssl`` command line; agent A (conftest's ``agent``) adds it as a peer. Every refusal (wrong
token, a CA that did not sign B's certificate, a closed port, an ``http://`` URL) has its own
code and exit status and records nothing on either host; the token never shows up in output,
API answers, events or either agent's log.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CAPABILITIES
from tests.harness import AgentUnderTest, cleanup_agent

pytestmark = pytest.mark.integration

B_ADDRESS = "127.0.0.21"


@dataclass(frozen=True)
class Pki:
    ca: Path
    rogue_ca: Path  # a CA that did not sign B's certificate
    cert: Path
    key: Path


@dataclass
class PeerB:
    agent: AgentUnderTest
    port: int
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://{B_ADDRESS}:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.agent.home / "token"


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    directory = Path(tempfile.mkdtemp(prefix="bp-pki-", dir="/tmp"))
    try:
        ca, ca_key = _make_ca(directory, "lab-ca")
        rogue, _ = _make_ca(directory, "rogue-ca")
        key, request = directory / "b.key", directory / "b.csr"
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", "/CN=hostb", "-keyout", str(key), "-out", str(request))
        extensions = directory / "b.ext"
        extensions.write_text(
            f"subjectAltName=IP:{B_ADDRESS}\nbasicConstraints=CA:FALSE\n"
            "extendedKeyUsage=serverAuth\n"
        )
        cert = directory / "b.pem"
        _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
        yield Pki(ca=ca, rogue_ca=rogue, cert=cert, key=key)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def peer_b(pki: Pki, capabilities_cache: Path) -> Iterator[PeerB]:
    home = Path(tempfile.mkdtemp(prefix="bp-b-", dir="/tmp"))
    if any(capabilities_cache.iterdir()):
        shutil.copytree(capabilities_cache, home / CAPABILITIES)
    under_test = AgentUnderTest(home)
    port = _free_port(B_ADDRESS)
    under_test.ok("agent", "start", "--listen", f"{B_ADDRESS}:{port}",
                  "--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
    try:
        yield PeerB(under_test, port, pki)
    finally:
        cleanup_agent(under_test)


def _peer_add(a: AgentUnderTest, name: str, url: str, token_file: Path,
              ca: Path | None) -> subprocess.CompletedProcess[str]:
    arguments = ["peer", "add", name, "--api", url, "--token-file", str(token_file)]
    if ca is not None:
        arguments += ["--ca-file", str(ca)]
    return a.cli(*arguments, timeout=120)


def _peer_events(agent: AgentUnderTest) -> list[tuple[str, str]]:
    events = agent.json("events", "--limit", "100000")
    return [(e["type"], e["peer"]) for e in events if e["type"].startswith("peer.")]


def _nothing_recorded(a: AgentUnderTest, b: PeerB, name: str) -> None:
    assert name not in [peer["name"] for peer in a.json("peer", "list")]
    assert name not in [peer for _type, peer in _peer_events(a)]
    assert b.agent.json("peer", "list") == []
    assert _peer_events(b.agent) == []


def test_b_serves_the_api_over_tls_only(peer_b: PeerB) -> None:
    pinned = ssl.create_default_context(cafile=str(peer_b.pki.ca))
    with httpx.Client(verify=pinned, trust_env=False, timeout=30) as client:
        assert client.get(f"{peer_b.url}/v1/health").json()["status"] == "ok"
        assert client.get(f"{peer_b.url}/v1/facts").status_code == 401  # the token still counts
        answer = client.get(f"{peer_b.url}/v1/facts",
                            headers={"Authorization": f"Bearer {peer_b.agent.token}"})
        assert answer.status_code == 200 and answer.json()["cpus"] >= 1
    with pytest.raises(httpx.TransportError), httpx.Client(trust_env=False, timeout=30) as plain:
        plain.get(f"http://{B_ADDRESS}:{peer_b.port}/v1/health")
    assert peer_b.agent.ok("agent", "status")  # the UNIX socket is still plain HTTP


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.0.2.10", "[::]"])
@pytest.mark.parametrize("verb", ["start", "run"])
def test_listening_outside_loopback_without_tls_is_refused(verb: str, listen: str) -> None:
    home = Path(tempfile.mkdtemp(prefix="bp-n-", dir="/tmp"))
    shutil.rmtree(home)
    try:
        refused = AgentUnderTest(home).cli("agent", verb, "--listen", f"{listen}:18649",
                                           timeout=60)
        assert refused.returncode == 2, refused.stderr
        assert "listen.tls_required" in refused.stderr
        assert not home.exists()  # refused before anything was made
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_tls_options_without_their_pair_are_refused(pki: Pki) -> None:
    home = Path(tempfile.mkdtemp(prefix="bp-n-", dir="/tmp"))
    shutil.rmtree(home)
    under_test = AgentUnderTest(home)
    try:
        for arguments in (["--listen", f"{B_ADDRESS}:18648", "--tls-cert", str(pki.cert)],
                          ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)],
                          ["--listen", "0.0.0.0:18648", "--tls-cert", str(pki.cert),
                           "--tls-key", str(pki.ca)]):
            refused = under_test.cli("agent", "start", *arguments, timeout=60)
            assert refused.returncode == 2, (arguments, refused.stderr)
            assert "[listen." in refused.stderr
        assert not home.exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_refused_adds_have_their_own_codes_and_record_nothing(
    agent: AgentUnderTest, peer_b: PeerB, tmp_path: Path
) -> None:
    wrong_token = tmp_path / "wrong-token"
    wrong_token.write_text("not-the-token\n")
    closed = _free_port(B_ADDRESS)
    cases: list[tuple[str, Path, Path | None, int, str]] = [
        (peer_b.url, wrong_token, peer_b.pki.ca, 2, "peer.auth"),
        (peer_b.url, peer_b.token_file, peer_b.pki.rogue_ca, 2, "peer.tls"),
        (peer_b.url, peer_b.token_file, None, 2, "peer.tls"),  # the system's CAs: not B's
        (f"https://{B_ADDRESS}:{closed}", peer_b.token_file, peer_b.pki.ca, 3,
         "peer.unreachable"),
        (f"http://{B_ADDRESS}:{peer_b.port}", peer_b.token_file, peer_b.pki.ca, 2,
         "peer.insecure"),
        (f"{B_ADDRESS}:{peer_b.port}", peer_b.token_file, peer_b.pki.ca, 2, "peer.invalid"),
        (f"https://{B_ADDRESS}:{peer_b.port}/v1", peer_b.token_file, peer_b.pki.ca, 2,
         "peer.invalid"),
        (peer_b.url, peer_b.token_file, peer_b.pki.key, 2, "peer.invalid"),  # not a CA file
    ]
    for url, token_file, ca, exit_code, code in cases:
        refused = _peer_add(agent, "hostb-bad", url, token_file, ca)
        assert refused.returncode == exit_code, (url, ca, code, refused.stderr)
        assert f"[{code}]" in refused.stderr, (url, ca, refused.stderr)
        assert peer_b.agent.token not in refused.stdout + refused.stderr
        _nothing_recorded(agent, peer_b, "hostb-bad")
    bad_name = _peer_add(agent, "../b", peer_b.url, peer_b.token_file, peer_b.pki.ca)
    assert bad_name.returncode == 2 and "[peer.name_invalid]" in bad_name.stderr
    missing = _peer_add(agent, "hostb-bad", peer_b.url, tmp_path / "absent", peer_b.pki.ca)
    assert missing.returncode == 2
    _nothing_recorded(agent, peer_b, "hostb-bad")
    # The same refusals through the API carry the code in problem+json.
    with agent.http() as client:
        answer = client.post("/v1/peers", json={"name": "hostb-bad", "api": peer_b.url,
                                                "token": "not-the-token",
                                                "ca_pem": peer_b.pki.ca.read_text()})
    assert (answer.status_code, answer.json()["code"]) == (400, "peer.auth")


def test_add_list_show_never_show_the_token(agent: AgentUnderTest, peer_b: PeerB) -> None:
    token = peer_b.agent.token
    added = _peer_add(agent, "hostb", peer_b.url, peer_b.token_file, peer_b.pki.ca)
    assert added.returncode == 0, added.stderr
    outputs = [added.stdout, added.stderr]
    for arguments in (["peer", "list"], ["peer", "show", "hostb"], ["peer", "list", "--json"],
                      ["peer", "show", "hostb", "--json"], ["events", "--json"]):
        shown = agent.cli(*arguments)
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    with agent.http() as client:
        outputs += [client.get("/v1/peers").text, client.get("/v1/peers/hostb").text]
    outputs += [agent.home.joinpath("agent.log").read_text(),
                peer_b.agent.home.joinpath("agent.log").read_text()]
    for output in outputs:
        assert token not in output
    peers = agent.json("peer", "list")
    assert [(p["name"], p["api"], p["token"]) for p in peers] == [("hostb", peer_b.url, "set")]
    fingerprint = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(peer_b.pki.ca)],
        capture_output=True, text=True, check=True,
    ).stdout.strip().split("=", 1)[1]
    assert peers[0]["ca_fingerprints"] == [f"SHA256:{fingerprint}"]
    shown = agent.json("peer", "show", "hostb")
    assert shown["now"]["answers"] is True
    assert shown["now"]["version"] and shown["now"]["hostname"] == socket.gethostname()
    again = _peer_add(agent, "hostb", peer_b.url, peer_b.token_file, peer_b.pki.ca)
    assert again.returncode == 2 and "[peer.exists]" in again.stderr
    assert peer_b.agent.json("peer", "list") == []  # B learned nothing about A


def _migrate_check(agent: AgentUnderTest, *arguments: str) -> tuple[int, Any]:
    result = agent.cli("vm", "migrate-check", *arguments, "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_migrate_check_to_a_peer_uses_its_live_facts(
    agent: AgentUnderTest, peer_b: PeerB, tmp_path: Path
) -> None:
    agent.ok("pool", "create", "peerpool", "--type", "dir")
    agent.ok("vm", "create", "peervm", "--memory", "128M")
    agent.ok("throttle", "set", "peervm", "peergroup", "--total-iops-sec", "500")
    agent.ok("disk", "attach", "peervm", "--pool", "peerpool", "--size", "16M", "--queues", "4",
             "--io-threads", "2", "--throttle-groups", "peergroup")
    facts_file = tmp_path / "b-facts.json"
    facts_file.write_text(peer_b.agent.ok("facts", "--json"))
    from_file = _migrate_check(agent, "peervm", "--to-facts", str(facts_file))
    live = _migrate_check(agent, "peervm", "--to", "hostb")
    assert live == from_file
    # A host that lacks what the VM uses, from a file: the live answer is not a constant.
    old = json.loads(facts_file.read_text())
    old["qemu"]["version"], old["libvirt"]["version"] = "8.2.0", "9.0.0"
    facts_file.write_text(json.dumps(old))
    exit_code, gaps = _migrate_check(agent, "peervm", "--to-facts", str(facts_file))
    assert exit_code == 1 and gaps["gaps"] and live[0] == 0
    both = agent.cli("vm", "migrate-check", "peervm", "--to", "hostb", "--to-facts",
                     str(facts_file))
    neither = agent.cli("vm", "migrate-check", "peervm")
    unknown = agent.cli("vm", "migrate-check", "peervm", "--to", "nohost")
    assert (both.returncode, neither.returncode, unknown.returncode) == (2, 2, 2)
    assert "[peer.not_found]" in unknown.stderr


def test_a_peer_that_is_down_is_shown_so_and_is_unreachable(
    agent: AgentUnderTest, peer_b: PeerB
) -> None:
    peer_b.agent.ok("agent", "stop")
    try:
        shown = agent.json("peer", "show", "hostb")
        assert shown["now"]["answers"] is False and shown["now"]["code"] == "peer.unreachable"
        check = agent.cli("vm", "migrate-check", "peervm", "--to", "hostb")
        assert check.returncode == 3 and "[peer.unreachable]" in check.stderr
    finally:
        peer_b.agent.ok("agent", "start", "--listen", f"{B_ADDRESS}:{peer_b.port}",
                        "--tls-cert", str(peer_b.pki.cert), "--tls-key", str(peer_b.pki.key))
    assert agent.json("peer", "show", "hostb")["now"]["answers"] is True


def test_remove_forgets_the_peer(agent: AgentUnderTest, peer_b: PeerB) -> None:
    removed = agent.json("peer", "remove", "hostb")
    assert removed["name"] == "hostb" and removed["token"] == "set"
    assert agent.json("peer", "list") == []
    again = agent.cli("peer", "remove", "hostb")
    assert again.returncode == 2 and "[peer.not_found]" in again.stderr
    shown = agent.cli("peer", "show", "hostb")
    assert shown.returncode == 2 and "[peer.not_found]" in shown.stderr
    assert _peer_events(agent) == [("peer.added", "hostb"), ("peer.removed", "hostb")]
