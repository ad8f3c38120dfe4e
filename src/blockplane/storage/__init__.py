"""blockplane.storage: pools and volumes as user-facing resources, on top of thin/ backends."""
