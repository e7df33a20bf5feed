"""``python -m tools``: see tools/cli.py."""

from __future__ import annotations

import sys

from tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
