"""The one convention of the results services return: frozen dataclasses whose fields are the
JSON keys of the answer, field for field (``api.models`` builds the API's pydantic models from
them, and the CLI decodes into them).

A key that an answer carries only when it has something to say (``differs`` of a throttle group
whose definitions agree) is declared ``field(default=None, kw_only=True, metadata=KEY_IF_SET)``:
its field is None when the key is absent. Decides nothing and imports nothing else of
blockplane.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any

#: Dataclass field metadata: leave the key out of the JSON while the field is None.
OMIT_IF_NONE = "omit_if_none"
KEY_IF_SET: Mapping[str, bool] = MappingProxyType({OMIT_IF_NONE: True})


def view_fields(view: Any) -> dict[str, Any]:
    """The fields of a view, not copied (for building a wider view from a narrower one)."""
    return {item.name: getattr(view, item.name) for item in fields(view)}
