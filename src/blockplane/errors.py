"""The one error tree of blockplane.

Every failure a user can see is a ``BlockplaneError`` with a stable ``code`` and a message a
person can act on. The API turns them into problem+json (``http_status``), the CLI into exit
codes (4xx: 2, bad input with nothing changed; 5xx: 1, the operation failed).

    BlockplaneError                 500  internal
    ├── InvalidInput                400  input.invalid, or a narrower code
    │   └── PathEscape              400  path.escape
    ├── NotFound                    404  <kind>.not_found
    ├── Conflict                    409  <kind>.exists, group.in_use, job.busy ...
    ├── CapabilityMissing           422  capability.missing
    ├── Unauthorized                401  auth.required
    ├── OperationFailed             500  operation.failed, or a narrower code
    │   ├── HypervisorError         502  hypervisor.error
    │   └── DeadlineExceeded        504  timeout.<what it waited for>
    └── StateUnavailable            503  state.unavailable
"""

from __future__ import annotations

from typing import Any


class BlockplaneError(Exception):
    code: str = "internal"
    http_status: int = 500
    title: str = "Internal error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    @property
    def exit_code(self) -> int:
        return 2 if 400 <= self.http_status < 500 else 1

    def __str__(self) -> str:
        return self.message


class InvalidInput(BlockplaneError):
    code = "input.invalid"
    http_status = 400
    title = "Invalid input"


class PathEscape(InvalidInput):
    code = "path.escape"
    title = "Path outside its pool"


class NotFound(BlockplaneError):
    code = "not_found"
    http_status = 404
    title = "Not found"


class Conflict(BlockplaneError):
    code = "conflict"
    http_status = 409
    title = "Conflict"


class CapabilityMissing(BlockplaneError):
    code = "capability.missing"
    http_status = 422
    title = "Host capability missing"


class Unauthorized(BlockplaneError):
    code = "auth.required"
    http_status = 401
    title = "Unauthorized"


class OperationFailed(BlockplaneError):
    code = "operation.failed"
    http_status = 500
    title = "Operation failed"


class HypervisorError(OperationFailed):
    code = "hypervisor.error"
    http_status = 502
    title = "Hypervisor error"


class DeadlineExceeded(OperationFailed):
    """A request ran out of time waiting on something outside the agent (code names it)."""

    code = "timeout"
    http_status = 504
    title = "Timed out"


def outcome_unknown(error: BaseException) -> bool:
    """True for a timeout whose call was left running: it may still take effect, so the caller
    must undo nothing and leave its intent for the reconcile that follows the call's return."""
    return isinstance(error, DeadlineExceeded) and bool(error.details.get("outcome_unknown"))


class StateUnavailable(BlockplaneError):
    code = "state.unavailable"
    http_status = 503
    title = "State store unavailable"
