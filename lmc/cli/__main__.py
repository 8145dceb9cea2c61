"""`python -m lmc.cli`."""

import sys

from lmc.cli import main

sys.exit(main())
