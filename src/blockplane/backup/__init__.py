"""Backups: pull-mode exports over NBD for backup software, the checkpoints that incrementals
start from (kept so that they survive what VMs go through), and the restore of a volume from a
full backup and its incrementals.

Push backups are still started by ``chain.jobs`` (they grew up there; so are rbd disks'
backups, RBD snapshots exported, in ``chain/jobs/rbd_backup.py``); a pull backup is a job of
the same kind (``backup``, mode ``pull``) in the same job table, so ``job list|show`` and the
one-job-per-disk rule cover both.
"""
