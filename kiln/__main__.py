"""``python -m kiln``: the ``kiln`` command."""

from kiln.cli import main

raise SystemExit(main())
