"""blockplane.chain."""
