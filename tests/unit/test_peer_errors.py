"""Every way a call to a peer fails maps to one code and exit status, and nothing is recorded."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpcore
import httpx
import pytest

from blockplane.errors import BlockplaneError
from blockplane.migration.peer_address import parse_peer_url
from blockplane.migration.peer_client import (
    PeerClient,
    PeerFacts,
    answer_failure,
    facts_document,
    transport_failure,
)
from blockplane.migration.peer_errors import PeerBadAnswer
from blockplane.migration.peer_store import PeerRecord, PeerStore
from blockplane.migration.peers import PeerService
from blockplane.runtime.eventlog import EventLog
from blockplane.store.database import Database
from blockplane.store.records import Records

TOKEN = "s3cret-token-value"
URL = "https://127.0.0.21:8640"


def _as_httpx_raises(low: BaseException, mapped: type[httpx.TransportError]) -> BaseException:
    """An httpx error chained as httpx chains it: httpx <- httpcore <- the OS or ssl error."""
    try:
        try:
            try:
                raise low
            except BaseException as error:
                raise httpcore.ConnectError(str(error)) from error
        except httpcore.ConnectError as error:
            raise mapped(str(error)) from error
    except httpx.TransportError as final:
        return final


def test_an_untrusted_certificate_is_peer_tls() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    error = transport_failure("hostb", URL, _as_httpx_raises(verify, httpx.ConnectError))
    assert (error.code, error.http_status, error.exit_code) == ("peer.tls", 400, 2)
    assert "unable to get local issuer certificate" in error.message


def test_a_peer_that_does_not_speak_tls_is_peer_tls() -> None:
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error = transport_failure("hostb", URL, _as_httpx_raises(wrong, httpx.ConnectError))
    assert error.code == "peer.tls"


@pytest.mark.parametrize(
    ("low", "mapped"),
    [
        (ConnectionRefusedError(111, "Connection refused"), httpx.ConnectError),
        (OSError(113, "No route to host"), httpx.ConnectError),
        (TimeoutError("timed out"), httpx.ConnectTimeout),
        (TimeoutError("timed out"), httpx.ReadTimeout),
        (ConnectionResetError(104, "reset"), httpx.ReadError),
    ],
)
def test_no_answer_is_peer_unreachable(
    low: BaseException, mapped: type[httpx.TransportError]
) -> None:
    error = transport_failure("hostb", URL, _as_httpx_raises(low, mapped))
    assert (error.code, error.http_status) == ("peer.unreachable", 502)
    assert "hostb" in error.message and URL in error.message


def test_http_statuses_of_a_peer() -> None:
    assert answer_failure("hostb", URL, 200, "/v1/facts") is None
    refused = answer_failure("hostb", URL, 401, "/v1/facts")
    assert refused is not None and (refused.code, refused.exit_code) == ("peer.auth", 2)
    other = answer_failure("hostb", URL, 404, "/v1/facts")
    assert other is not None and other.code == "peer.bad_answer" and other.exit_code == 1


def test_a_facts_answer_must_look_like_facts() -> None:
    good = {"qemu": {}, "libvirt": {}, "capabilities": {}, "cpus": 2,
            "agent": {"version": "0.1.0", "hostname": "b"}}
    assert PeerFacts(facts_document("hostb", good)).agent.hostname == "b"
    bad_answers: list[object] = [
        [], {"qemu": {}}, {**good, "cpus": "2"}, {**good, "capabilities": None}
    ]
    for bad in bad_answers:
        with pytest.raises(PeerBadAnswer):
            facts_document("hostb", bad)


def test_the_client_repr_has_no_token() -> None:
    client = PeerClient("hostb", parse_peer_url(URL), TOKEN, None)
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(PeerRecord("hostb", URL, TOKEN, None, 0.0, None, None))


class FakeClient(PeerClient):
    """Answers facts, or raises what the test set, without a network."""

    outcome: BaseException | None = None

    def facts(self) -> PeerFacts:
        if self.outcome is not None:
            raise self.outcome
        return PeerFacts({"qemu": {}, "libvirt": {}, "capabilities": {}, "cpus": 4,
                          "agent": {"version": "9.9", "hostname": "hostb.lab"}})


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[PeerService, PeerStore]]:
    database = Database(tmp_path / "state.db")
    store = PeerStore(database)

    def factory(record: PeerRecord, timeout_s: float) -> PeerClient:
        return FakeClient(record.name, parse_peer_url(record.api), record.token, record.ca_pem,
                          timeout_s)

    try:
        yield PeerService(store, EventLog(Records(database)), factory), store
    finally:
        FakeClient.outcome = None
        database.close()


@pytest.mark.parametrize(
    "outcome",
    [
        transport_failure("hostb", URL, _as_httpx_raises(
            ssl.SSLCertVerificationError(1, "verify failed"), httpx.ConnectError)),
        transport_failure("hostb", URL, _as_httpx_raises(
            ConnectionRefusedError(111, "refused"), httpx.ConnectError)),
        answer_failure("hostb", URL, 401, "/v1/facts"),
        PeerBadAnswer("not facts"),
    ],
)
def test_a_refused_add_records_nothing(
    service: tuple[PeerService, PeerStore], outcome: BlockplaneError
) -> None:
    peers, store = service
    FakeClient.outcome = outcome
    with pytest.raises(BlockplaneError) as refused:
        peers.add("hostb", URL, TOKEN, None)
    assert refused.value.code == outcome.code
    assert store.all() == []


def test_add_records_the_peer_and_never_shows_the_token(
    service: tuple[PeerService, PeerStore],
) -> None:
    peers, store = service
    view = peers.add("hostb", URL + "/", TOKEN, None)
    assert view.to_json()["token"] == "set"
    assert (view.api, view.hostname, view.version) == (URL, "hostb.lab", "9.9")
    assert [record.token for record in store.all()] == [TOKEN]
    with pytest.raises(BlockplaneError) as again:
        peers.add("hostb", URL, TOKEN, None)
    assert again.value.code == "peer.exists"
    FakeClient.outcome = transport_failure("hostb", URL, _as_httpx_raises(
        TimeoutError("timed out"), httpx.ConnectTimeout))
    status = peers.show("hostb")
    assert not status.now.answers and status.now.code == "peer.unreachable"
    for shown in (view.to_json(), status.to_json(), [v.to_json() for v in peers.list()]):
        assert TOKEN not in repr(shown)
    assert peers.remove("hostb").name == "hostb"
    assert store.all() == []
    with pytest.raises(BlockplaneError) as gone:
        peers.remove("hostb")
    assert (gone.value.code, gone.value.exit_code) == ("peer.not_found", 2)
