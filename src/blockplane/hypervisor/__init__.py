"""blockplane.hypervisor."""
