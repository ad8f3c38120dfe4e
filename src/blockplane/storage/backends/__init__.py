"""blockplane.storage.backends: where pool volumes live (dir, loop, lvm), behind one protocol."""
