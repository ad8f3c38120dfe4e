"""blockplane.storage: pools and volumes as user-facing resources, names and sizes, qemu-img,
and the pool backends (``storage.backends``: dir, loop, lvm)."""
