"""blockplane.thin: pools with growable volumes and the pure logic of thin provisioning.

Building blocks, no services: names and sizes (``paths``, ``sizes``), pool backends behind the
``VolumeBackend`` protocol (``backends``: dir, loop, lvm; ``capacity``; ``commands``), the
threshold arithmetic (``threshold``) and the monitor state machine (``monitor_state``). Must not
import libvirt; the extender that wires events to these lives elsewhere.
"""
