"""blockplane.model."""
