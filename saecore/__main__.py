"""`python -m saecore`: the command line."""

from saecore.cli import main

raise SystemExit(main())
