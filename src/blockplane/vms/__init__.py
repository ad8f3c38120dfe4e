"""blockplane.vms: VM lifecycle and the disks attached to VMs."""
