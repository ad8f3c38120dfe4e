"""``lab up --ceph``: the rbd pool ``shared`` on every host, over the lab's one-node cluster.

Owns the lab's cephx user (``client.blockplane``, ``profile rbd`` on the cluster's ``rbd``
pool, its keyring in the cluster's work directory) and the ``blockplane pool create shared
--type rbd`` run inside each host. Every host adds the same cluster as the same user, so each
derives the same libvirt secret UUID (``storage.rbd_pools``), which a migrating VM's definition
names on both sides. Must not start or stop the cluster (``lab.ceph``) or hosts.
"""

from __future__ import annotations

import json
from typing import Any

from blockplane.errors import OperationFailed
from blockplane.lab.execution import blockplane_argv, run_in_host
from blockplane.lab.state import HostState, LabState

SHARED_POOL = "shared"
LAB_CEPH_USER = "blockplane"
LAB_RADOS_POOL = "rbd"


def create_shared_pools(state: LabState, cluster: Any) -> dict[str, Any]:
    """Make the lab user and the ``shared`` pool on every host; what was made, for the state."""
    user = cluster.create_user(LAB_CEPH_USER, pools=(LAB_RADOS_POOL,))
    secrets: dict[str, str] = {}
    for host in state.hosts:
        secrets[host.name] = _create_on(state, host, str(cluster.conf), str(user.keyring))
    uuids = set(secrets.values())
    if len(uuids) != 1:
        raise OperationFailed(f"the hosts' secret UUIDs differ: {secrets}",
                              code="lab.step_failed")
    return {"name": SHARED_POOL, "rbd_pool": LAB_RADOS_POOL, "user": LAB_CEPH_USER,
            "keyring": str(user.keyring), "secret_uuid": uuids.pop()}


def _create_on(state: LabState, host: HostState, conf: str, keyring: str) -> str:
    output = run_in_host(
        state, host,
        blockplane_argv("pool", "create", SHARED_POOL, "--type", "rbd", "--ceph-conf", conf,
                        "--rbd-pool", LAB_RADOS_POOL, "--ceph-user", LAB_CEPH_USER,
                        "--ceph-keyring", keyring, "--json"),
        what=f"pool create {SHARED_POOL}", timeout=120,
    )  # fmt: skip
    return str(json.loads(output)["rbd"]["secret_uuid"])
