"""``python -m slotlab ...``: the same as the ``slotlab`` command."""

import sys

from slotlab.cli import main

sys.exit(main())
