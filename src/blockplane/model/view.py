"""The one convention of the results services return: frozen dataclasses whose fields are the
JSON keys of the answer, field for field (``api.models`` builds the API's pydantic models from
them, and the CLI decodes into them).

A key that an answer carries only when it has something to say (``differs`` of a throttle group
whose definitions agree) is declared with ``key_if_set()``: its field is None when the key is
absent. Decides nothing and imports nothing else of blockplane.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

#: Dataclass field metadata: leave the key out of the JSON while the field is None.
OMIT_IF_NONE = "omit_if_none"


def key_if_set() -> Any:
    """A field (None by default, keyword-only) whose JSON key is left out while it is None."""
    return field(default=None, kw_only=True, metadata={OMIT_IF_NONE: True})
