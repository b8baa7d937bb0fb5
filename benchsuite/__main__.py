"""`python -m benchsuite` is the `benchsuite` command."""

from benchsuite.cli import main

main()
