"""blockplane.demo: the guided tour."""
