"""blockplane.store."""
