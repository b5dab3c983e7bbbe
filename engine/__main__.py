"""`python -m engine ...`: the headless command line (see engine/cli.py)."""
from .cli import main

raise SystemExit(main())
