"""``python -m blockplane.lab``: the same as ``scripts/lab``."""

from blockplane.lab.cli import main

main()
