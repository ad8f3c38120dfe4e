"""The lab: simulated hosts on one machine and a one-node Ceph cluster (tests, demo, bench)."""
