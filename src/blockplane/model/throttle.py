"""A named throttle group of a domain (``<throttlegroups><throttlegroup>``), as a value.

Holds what libvirt stores for a group: its name and its limits. Decides nothing: validation and
tier policy live in ``blockplane.throttle``.
"""

from __future__ import annotations

from dataclasses import dataclass

from blockplane.model.throttle_limits import ThrottleLimits


@dataclass(frozen=True)
class ThrottleGroup:
    name: str
    limits: ThrottleLimits

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "limits": self.limits.to_dict(nonzero_only=True)}
