"""blockplane.thin."""
