"""Names and paths inside a pool: the one place that decides what a name may be.

Owns volume-name validation and confinement of volume paths to their pool directory (following
symlinks already planted there), plus pool/VM name validation. ``parse_size`` is re-exported for
callers that validate a whole request here. Must not create, open or delete anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from blockplane.errors import InvalidInput, PathEscape
from blockplane.storage.sizes import parse_size

__all__ = ["OBJECT_NAME", "VOLUME_NAME", "confine", "parse_size", "validate_name",
           "validate_volume_name"]

VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SUFFIX = re.compile(r"(\.[A-Za-z0-9_-]{1,15})?")
_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit, without '..'"


def validate_volume_name(name: object) -> str:
    """Return ``name`` if it may name a volume file or LV; raise PathEscape otherwise."""
    if not isinstance(name, str) or VOLUME_NAME.fullmatch(name) is None or ".." in name:
        raise PathEscape(
            f"volume name {name!r} is not allowed: use 1 to 128 {_RULE}",
            name=repr(name),
        )
    return name


def validate_name(kind: str, name: object) -> str:
    """Return ``name`` if it may name a ``kind`` (pool, vm, ...); else InvalidInput
    ``<kind>.name_invalid``."""
    if not isinstance(name, str) or OBJECT_NAME.fullmatch(name) is None or ".." in name:
        raise InvalidInput(
            f"{kind} name {name!r} is not allowed: use 1 to 64 {_RULE}",
            code=f"{kind}.name_invalid",
            name=repr(name),
        )
    return name


def confine(pool_root: Path, name: str, *, suffix: str = "") -> Path:
    """Return the resolved path of volume ``name`` (plus ``suffix``, e.g. ``.img``) in the pool.

    Symlinks that already exist are followed, and the result must still lie strictly inside the
    resolved pool root; a name that is not a plain volume name never reaches the filesystem.
    """
    validate_volume_name(name)
    if _SUFFIX.fullmatch(suffix) is None:
        raise ValueError(f"bad volume file suffix {suffix!r}")
    root = Path(os.path.realpath(pool_root))
    joined = root / f"{name}{suffix}"
    try:
        resolved = Path(os.path.realpath(joined, strict=True))
    except FileNotFoundError:
        resolved = Path(os.path.realpath(joined))
    except OSError as error:
        raise PathEscape(
            f"volume {name!r} cannot be resolved inside pool {root}: {error.strerror}",
            name=name,
        ) from error
    if resolved == root or not resolved.is_relative_to(root):
        raise PathEscape(
            f"volume {name!r} resolves to {resolved}, outside its pool directory {root}",
            name=name,
            resolved=str(resolved),
        )
    return resolved
