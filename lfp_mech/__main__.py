"""``python -m lfp_mech``: the ``lfp-mech`` command line."""

import sys

from lfp_mech.runner.cli import main

sys.exit(main())
