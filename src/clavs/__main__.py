"""`python -m clavs ...` runs the `clavs` command."""

import sys

from clavs.cli import main

sys.exit(main())
