"""``python -m patchbay`` runs the command line."""

from patchbay.cli import main

if __name__ == "__main__":  # not when a spawned child process imports it
    main()
