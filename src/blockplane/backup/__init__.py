"""Backups: what a backup writes and how it is restored (push backups of rbd disks so far)."""
