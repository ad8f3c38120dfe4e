"""blockplane.iothreads."""
