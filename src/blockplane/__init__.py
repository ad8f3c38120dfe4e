"""blockplane: the block-storage control plane for a KVM host."""

__version__ = "0.1.0"
