"""`python -m fmtest.cli`: the same as the `fmtest` command."""

import sys

from fmtest.cli import main

sys.exit(main())
