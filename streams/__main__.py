"""``python -m streams``: the same as the ``streams`` command."""

from streams.cli import main

main()
