"""``python -m mixedmodels`` runs the command-line tool."""

from mixedmodels.cli import main

raise SystemExit(main())
