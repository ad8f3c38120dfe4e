"""blockplane.cli."""
