"""problem+json responses for every error the API can return."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from blockplane.errors import BlockplaneError

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, code: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://blockplane.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


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
