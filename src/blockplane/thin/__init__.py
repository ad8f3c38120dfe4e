"""blockplane.thin: thin provisioning on growable pool volumes.

The threshold arithmetic (``threshold``), the monitor state machine (``monitor_state``) and its
persisted record (``monitor_store``); bulk stats are read by ``hypervisor.bulk_stats``. The service:
``monitor.ThinMonitor``, with its registry, extender, pause keeper and reconciler. The pool
backends it grows live in ``blockplane.storage.backends``. Must not import libvirt itself:
domains are reached through ``ports`` (satisfied by ``blockplane.hypervisor``).
"""
