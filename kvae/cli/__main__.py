"""`python -m kvae.cli`: the `kvae` command."""

import sys

from kvae.cli import main

sys.exit(main())
