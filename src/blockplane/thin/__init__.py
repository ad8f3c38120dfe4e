"""blockplane.thin: pools with growable volumes, and thin provisioning on top of them.

Building blocks: names and sizes (``paths``, ``sizes``), pool backends behind the
``VolumeBackend`` protocol (``backends``: dir, loop, lvm; ``capacity``; ``commands``), the
threshold arithmetic (``threshold``), the monitor state machine (``monitor_state``), bulk-stats
parsing (``stats``) and commit sizing (``measure``). The service: ``monitor.ThinMonitor``, with
its registry and store, extender, pause keeper and reconciler. Must not import libvirt itself:
domains are reached through ``ports`` (satisfied by ``blockplane.hypervisor``).
"""
