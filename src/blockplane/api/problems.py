"""problem+json responses for every error the API can return."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from blockplane.errors import BlockplaneError

PROBLEM_JSON = "application/problem+json"

#: The body of every error response, as the OpenAPI document states it.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}

_DOCUMENTED = {
    400: "Invalid input, nothing changed",
    401: "Missing or wrong bearer token",
    404: "No such route, VM, pool, volume, disk, group, checkpoint, job or peer",
    405: "Method not allowed",
    409: "Conflicts with the current state (exists, in use, busy)",
    413: "Request body over 1 MiB",
    422: "A host capability is missing, or an Idempotency-Key was reused elsewhere",
    500: "The operation failed",
    502: "The hypervisor refused or failed, or a peer agent was unreachable",
    503: "The state store is unavailable",
    504: "Timed out waiting on the hypervisor, the guest agent or a VM's lock (code names it)",
}

#: ``responses=`` for every route: the problem+json answers the error handlers can give, so the
#: OpenAPI document matches what the API sends (and FastAPI's unused 422 schema is not shown).
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
    for status, text in _DOCUMENTED.items()
}


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        # ASCII-escaped: a detail may echo input UTF-8 cannot encode (a lone surrogate in a key).
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def problem(status: int, title: str, detail: str, code: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://blockplane.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return ProblemResponse(body, status_code=status)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(BlockplaneError)
    async def blockplane_error(_request: Request, error: BlockplaneError) -> JSONResponse:
        extra = {key: value for key, value in error.details.items() if _is_json_scalar(value)}
        return problem(error.http_status, error.title, error.message, error.code, **extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors():
            location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
            parts.append(f"{location}: {item.get('msg', 'invalid')}")
        return problem(400, "Invalid input", "; ".join(parts) or "invalid request", "input.invalid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "route.not_found", 405: "method.not_allowed", 401: "auth.required"}.get(
            error.status_code, "http.error"
        )
        return problem(error.status_code, str(error.detail), str(error.detail), code)

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, error: Exception) -> JSONResponse:
        return problem(500, "Internal error", f"{type(error).__name__}: {error}", "internal")


def _is_json_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool | list) or value is None
