"""Several hosts: the peers an agent trusts and, later, the migration job on both ends.

Peers (``peers.py``) are other hosts' agents, reached only over HTTPS with a pinned CA and the
peer's bearer token (``peer_client.py``). Must not import libvirt: the hypervisor layer owns it.
"""
