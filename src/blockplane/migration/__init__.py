"""Several hosts: the peers an agent trusts, and the migration job on both of its ends.

Peers (``peers.py``) are other hosts' agents, reached only over HTTPS with a pinned CA and the
peer's bearer token (``peer_client.py``). A live migration is a job the source drives
(``source.py``: check, prepare, migrate, finish, cleanup; ``phases.py`` its pure state machine)
and the destination serves (``destination.py``, planning with ``landing.py`` and ``replan.py``).
Must not import libvirt: the hypervisor layer owns it (``hypervisor.migration``).
"""
