"""``python -m launcher``: the ``ftlaunch`` command."""

from __future__ import annotations

import sys

from launcher.cli import main

sys.exit(main())
