"""The API's edges: idempotency keys, size limits, the event stream, TCP and the home's mode."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import BLOCKPLANE, AgentUnderTest

pytestmark = pytest.mark.integration


def test_idempotency_key_acts_once(agent: AgentUnderTest) -> None:
    headers = {"Idempotency-Key": "create-idem-pool-1"}
    body = {"name": "idem", "type": "dir"}
    with agent.http() as client:
        first = client.post("/v1/pools", json=body, headers=headers)
        second = client.post("/v1/pools", json=body, headers=headers)
        other_route = client.post("/v1/vms", json={"name": "x"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotency-replayed"] == "true"
    assert [p["name"] for p in agent.json("pool", "list")].count("idem") == 1
    assert other_route.status_code == 422
    assert other_route.json()["code"] == "idempotency.mismatch"
    assert "x" not in [vm["name"] for vm in agent.json("vm", "list")]


def test_concurrent_replays_act_once(agent: AgentUnderTest) -> None:
    headers = {"Idempotency-Key": "concurrent-pool"}
    statuses: list[int] = []

    def create() -> None:
        with agent.http() as client:
            statuses.append(
                client.post(
                    "/v1/pools", json={"name": "conc", "type": "dir"}, headers=headers
                ).status_code
            )

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * 8
    events = agent.json("events", "--type", "pool.created", "--limit", "1000")
    assert sum(1 for event in events if event["pool"] == "conc") == 1


def test_replay_needs_the_token(agent: AgentUnderTest) -> None:
    with agent.http() as client:
        client.post(
            "/v1/pools", json={"name": "tok", "type": "dir"}, headers={"Idempotency-Key": "tok-key"}
        )
    with agent.http(token=None) as client:
        replay = client.post(
            "/v1/pools", json={"name": "tok", "type": "dir"}, headers={"Idempotency-Key": "tok-key"}
        )
    assert replay.status_code == 401


def test_oversized_body_and_long_names_are_refused(agent: AgentUnderTest) -> None:
    before = agent.json("pool", "list")
    with agent.http() as client:
        huge = client.post(
            "/v1/pools",
            content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"content-type": "application/json"},
        )
        long_name = client.post("/v1/pools", json={"name": "p" * 5000, "type": "dir"})
    assert huge.status_code == 413 and huge.json()["code"] == "request.too_large"
    assert long_name.status_code == 400
    assert agent.json("pool", "list") == before


def test_event_stream_delivers_new_events(agent: AgentUnderTest) -> None:
    received: list[dict[str, object]] = []

    def follow() -> None:
        with (
            agent.http() as client,
            client.stream(
                "GET",
                "/v1/events",
                params={"follow": "true", "type": "pool.created", "after": 10**9},
            ) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[len("data: ") :]))
                    return

    listener = threading.Thread(target=follow, daemon=True)
    listener.start()
    time.sleep(1.0)
    agent.ok("pool", "create", "streamed", "--type", "dir")
    listener.join(timeout=20)
    assert received and received[0]["pool"] == "streamed"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_tcp_needs_a_token_and_is_off_by_default(agent: AgentUnderTest) -> None:
    home = Path(tempfile.mkdtemp(prefix="bp-tcp-", dir="/tmp"))
    port = _free_port()
    env = {**os.environ, "BLOCKPLANE_HOME": str(home)}
    subprocess.run(
        [*BLOCKPLANE, "agent", "start", "--listen", f"127.0.0.1:{port}"],
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        token = (home / "token").read_text().strip()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/health").status_code == 200
        assert httpx.get(f"{base}/v1/vms").status_code == 401
        assert (
            httpx.get(f"{base}/v1/vms", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        assert (
            httpx.get(f"{base}/v1/vms", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )
        log = (home / "agent.log").read_text()
        assert "nope" not in log and token not in log
    finally:
        subprocess.run([*BLOCKPLANE, "agent", "stop"], env=env, check=False)
        subprocess.run(["rm", "-rf", str(home)], check=False)
    # The module's own agent was started without --listen: nothing answers on a TCP port.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_world_writable_home_is_refused() -> None:
    home = Path(tempfile.mkdtemp(prefix="bp-ww-", dir="/tmp"))
    home.chmod(0o777)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "blockplane", "--home", str(home), "agent", "run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "world-writable" in result.stderr
        assert not (home / "state.db").exists()
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)
