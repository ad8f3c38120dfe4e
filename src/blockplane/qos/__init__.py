"""blockplane.qos."""
