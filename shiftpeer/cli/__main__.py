"""``python -m shiftpeer.cli``: the ``shiftpeer`` command."""

import sys

from shiftpeer.cli import main

sys.exit(main())
