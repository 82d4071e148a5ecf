"""``python -m patchbay`` runs the command line."""

from patchbay.cli import main

main()
