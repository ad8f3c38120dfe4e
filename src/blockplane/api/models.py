"""The API's response models, built from the services' result dataclasses (``model.view``).

``response_model(View)`` is the pydantic model of a view: the same field names and types, the
nested views as models of their own, and keys marked ``KEY_IF_SET`` left out while None. Routes
declare it and return the dataclass; the OpenAPI document then describes every response body,
and the CLI encodes what it decoded with the same model (``cli.decode``). Holds no policy; the
only pydantic besides the request bodies (``schemas``).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from blockplane.model.view import OMIT_IF_NONE

_MODELS: dict[Any, type[BaseModel]] = {}


def response_model(view: type[Any]) -> type[BaseModel]:
    """The pydantic model of the dataclass ``view`` (one model per view, made once)."""
    model = _MODELS.get(view)
    if model is None:
        model = _MODELS[view] = _build(view)
    return model


def _build(view: type[Any]) -> type[BaseModel]:
    if not (isinstance(view, type) and dataclasses.is_dataclass(view)):
        raise TypeError(f"{view!r} is not a dataclass")
    hints = typing.get_type_hints(view)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(view):
        annotation = _translated(hints[item.name])
        if item.metadata.get(OMIT_IF_NONE):
            fields[item.name] = (annotation, Field(default=None, exclude_if=_is_none))
        elif item.default is not dataclasses.MISSING:
            fields[item.name] = (annotation, item.default)
        elif item.default_factory is not dataclasses.MISSING:
            fields[item.name] = (annotation, Field(default_factory=item.default_factory))
        else:
            fields[item.name] = (annotation, ...)
    doc = view.__doc__ or ""
    model: type[BaseModel] = create_model(
        view.__name__,
        __config__=ConfigDict(from_attributes=True),
        # A dataclass without a docstring of its own gets its signature as one: not for readers.
        __doc__=None if doc.startswith(f"{view.__name__}(") else doc,
        **fields,
    )
    return model


def response_list(view: type[Any]) -> Any:
    """The response model of a list of ``view``s."""
    return types.GenericAlias(list, (response_model(view),))


def _is_none(value: object) -> bool:
    return value is None


def _translated(annotation: Any) -> Any:
    """``annotation`` with every dataclass in it replaced by its response model."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return response_model(annotation)
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is None or not arguments:
        return annotation
    translated = tuple(_translated(argument) for argument in arguments)
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, translated)
    if origin is typing.Literal:
        return annotation
    return origin[translated if len(translated) > 1 else translated[0]]
