"""``python -m blockplane``: the same as the ``blockplane`` command."""

from blockplane.cli.main import main

main()
