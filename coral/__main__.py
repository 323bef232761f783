"""`python -m coral` runs the command line."""

import sys

from coral.cli import main

sys.exit(main())
