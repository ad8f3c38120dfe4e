"""The CLI's side of the API's types: decode an answer into the services' result dataclass,
and encode one for ``--json`` exactly as the API sent it (``api.models``). Owns no policy."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter

from blockplane.api.models import response_model
from blockplane.cli.client import EXIT_FAILED, AgentClient, CLIError

View = TypeVar("View")


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(view: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(view)
    if adapter is None:
        adapter = _ADAPTERS[view] = TypeAdapter(view)
    return adapter


def decode(view: type[View], data: Any) -> View:
    """``data`` (the API's JSON) as a ``view``; an answer of another shape is an error."""
    try:
        decoded: View = _adapter(view).validate_python(data)
    except ValueError as error:
        message = f"the agent answered in an unexpected shape: {error}"
        raise CLIError(message, EXIT_FAILED) from error
    return decoded


def decode_list(view: type[View], data: Any) -> list[View]:
    decoded: list[View] = decode(list[view], data)  # type: ignore[valid-type]
    return decoded


def encode(value: Any) -> Any:
    """A view (or a list of views) as the API's JSON."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [encode(item) for item in value]
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        raise TypeError(f"not a view: {value!r}")
    model = response_model(type(value))
    return model.model_validate(dataclasses.asdict(value)).model_dump(mode="json")


def fetch(client: AgentClient, view: type[View], method: str, path: str, body: Any = None,
          **params: Any) -> View:
    """One request, its answer decoded as a ``view``."""
    return decode(view, client.request(method, path, body, **params))


def fetch_list(client: AgentClient, view: type[View], method: str, path: str, body: Any = None,
               **params: Any) -> list[View]:
    return decode_list(view, client.request(method, path, body, **params))
