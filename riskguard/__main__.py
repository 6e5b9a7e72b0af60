"""``python -m riskguard`` runs the CLI."""

from riskguard.cli import main

main()
