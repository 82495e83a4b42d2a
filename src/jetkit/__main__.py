"""``python -m jetkit``: the command line."""

from .cli import main

main()
