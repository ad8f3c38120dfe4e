"""The OpenAPI document describes every response body (the routes declare their models)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from blockplane.api.app import create_app
from blockplane.metrics import AgentMetrics
from blockplane.store.database import Database

#: Answers that are not JSON: Prometheus text and libvirt XML.
NOT_JSON = {("get", "/v1/metrics"), ("get", "/v1/vms/{vm}/xml")}


def openapi(tmp_path: Path) -> dict[str, Any]:
    services = SimpleNamespace(
        database=Database(tmp_path / "state.db"), metrics=AgentMetrics(), events=None,
        facts=None, records=None, pools=SimpleNamespace(ceph_health=list), pool_volumes=None,
        vms=None, disks=None, provisioner=None,
        throttle=None, thin=None, chains=None, snapshots=None, jobs=None, checkpoints=None,
        top=None, reconcile_log=None, confirmer=None, intents=None, peers=None,
        hypervisor=SimpleNamespace(gate=None), adoption=None, backups=None,
        migrations=SimpleNamespace(source=None, destination=None))
    document: dict[str, Any] = create_app(services, "token").openapi()
    return document


def described(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """A schema that names what the body holds: properties (directly, through a $ref, or in
    its items), not a bare object."""
    if "$ref" in schema:
        return described(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if schema.get("type") == "array":
        return described(schema.get("items", {}), components)
    # One of several views (``/v1/jobs``: a block job or a migration): each must be described.
    for alternatives in ("oneOf", "anyOf"):
        if alternatives in schema:
            return all(described(one, components) for one in schema[alternatives])
    return bool(schema.get("properties"))


def test_every_json_answer_is_described(tmp_path: Path) -> None:
    document = openapi(tmp_path)
    components = document["components"]["schemas"]
    checked = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ok = [status for status in operation["responses"] if status.startswith("2")]
            assert ok, (method, path)
            if (method, path) in NOT_JSON:
                continue
            content = operation["responses"][ok[0]]["content"]["application/json"]
            assert described(content["schema"], components), (method, path, content)
            checked.append((method, path))
    assert len(checked) >= 40


def test_a_key_sent_only_when_set_is_optional_in_the_document(tmp_path: Path) -> None:
    group = openapi(tmp_path)["components"]["schemas"]["ThrottleGroupView"]
    assert "differs" in group["properties"] and "differs" not in group["required"]
    assert "limits" in group["required"]
