"""What a user can observe of an agent's state, for "a refused request changed nothing" checks.

One call reads, through the API, every VM (its record, live XML, disks, IOThreads, throttle
groups, snapshots and checkpoints), every pool and its volumes, every block job, every peer and
the files in each pool directory. Two reads compare equal when nothing a user can see has changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

VM_VIEWS = ("disks", "iothreads", "throttle-groups", "snapshots")


def _get(client: httpx.Client, path: str) -> Any:
    response = client.get(path)
    assert response.status_code == 200, f"GET {path} -> {response.status_code}: {response.text}"
    return response.json()


def _files(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError as error:
        return [f"<{error.strerror}>"]


def observed_state(client: httpx.Client, extra_dirs: Iterable[Path] = ()) -> dict[str, Any]:
    vms = _get(client, "/v1/vms")
    pools = _get(client, "/v1/pools")
    state: dict[str, Any] = {
        "vms": vms,
        "pools": pools,
        "jobs": [(job["id"], job["phase"]) for job in _get(client, "/v1/jobs")],
        "peers": _get(client, "/v1/peers"),
        "volumes": {
            pool["name"]: _get(client, f"/v1/pools/{quote(pool['name'], safe='')}/volumes")
            for pool in pools
        },
        "files": {
            pool["path"]: _files(pool["path"]) for pool in pools if pool["type"] != "lvm"
        },
        "extra": {str(directory): _files(str(directory)) for directory in extra_dirs},
    }
    for vm in vms:
        name = quote(vm["name"], safe="")
        xml = client.get(f"/v1/vms/{name}/xml")
        assert xml.status_code == 200, xml.text
        state[f"vm {vm['name']}"] = {
            "xml": xml.text,
            **{view: _get(client, f"/v1/vms/{name}/{view}") for view in VM_VIEWS},
            "checkpoints": _checkpoints(client, name),
        }
    return state


def _checkpoints(client: httpx.Client, vm: str) -> list[dict[str, Any]]:
    """Without the dirty byte counts, which a running guest moves on its own."""
    checkpoints = _get(client, f"/v1/vms/{vm}/checkpoints")
    for checkpoint in checkpoints:
        for disk in checkpoint["disks"]:
            disk.pop("dirty_bytes", None)
    return list(checkpoints)


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The top-level keys (and VM sub-views) whose values differ, for a readable failure."""
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and key.startswith("vm "):
            changed += [
                f"{key}/{view}" for view in sorted(set(old) | set(new))
                if old.get(view) != new.get(view)
            ]
        else:
            changed.append(key)
    return changed
