"""blockplane.api."""
