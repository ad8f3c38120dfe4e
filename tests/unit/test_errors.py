"""The error tree maps to HTTP statuses, problem+json bodies and CLI exit codes."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from blockplane.api.problems import install_problem_handlers
from blockplane.errors import (
    BlockplaneError,
    CapabilityMissing,
    Conflict,
    HypervisorError,
    InvalidInput,
    NotFound,
    OperationFailed,
    PathEscape,
    StateUnavailable,
    Unauthorized,
)


@pytest.mark.parametrize(
    ("error", "status", "exit_code", "code"),
    [
        (InvalidInput("bad"), 400, 2, "input.invalid"),
        (PathEscape("../x"), 400, 2, "path.escape"),
        (NotFound("gone", code="vm.not_found"), 404, 2, "vm.not_found"),
        (Conflict("busy", code="group.in_use"), 409, 2, "group.in_use"),
        (CapabilityMissing("old"), 422, 2, "capability.missing"),
        (Unauthorized("who"), 401, 2, "auth.required"),
        (OperationFailed("boom"), 500, 1, "operation.failed"),
        (HypervisorError("qemu"), 502, 1, "hypervisor.error"),
        (StateUnavailable("full", code="state.disk_full"), 503, 1, "state.disk_full"),
    ],
)
def test_status_exit_code_and_code(
    error: BlockplaneError, status: int, exit_code: int, code: str
) -> None:
    assert (error.http_status, error.exit_code, error.code) == (status, exit_code, code)


def _app(error: Exception) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise error

    @app.get("/typed/{number}")
    def typed(number: int) -> int:
        return number

    return TestClient(app, raise_server_exceptions=False)


def test_blockplane_error_becomes_problem_json() -> None:
    client = _app(Conflict("group gold is used by vda, vdb", code="group.in_use"))
    response = client.get("/boom")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body == {
        "type": "https://blockplane.dev/problems/group.in_use",
        "title": "Conflict",
        "status": 409,
        "detail": "group gold is used by vda, vdb",
        "code": "group.in_use",
    }


def test_validation_and_routing_errors_are_problem_json() -> None:
    client = _app(RuntimeError("never raised"))
    invalid = client.get("/typed/not-a-number")
    assert invalid.status_code == 400 and invalid.json()["code"] == "input.invalid"
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["code"] == "route.not_found"


def test_unexpected_error_is_a_500_problem_not_a_traceback() -> None:
    response = _app(RuntimeError("kaput")).get("/boom")
    assert response.status_code == 500
    assert json.loads(response.text)["code"] == "internal"
    assert "Traceback" not in response.text
