"""``python -m wcfrelay.migrate APP_CONFIG [--out DIR] [--force]``: the same as ``wcfrelay migrate``."""

import sys

from .cli import main

sys.exit(main())
