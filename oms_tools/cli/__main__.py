"""`python -m oms_tools.cli`, as the dev stack starts its processes."""

import sys

from oms_tools.cli import main

sys.exit(main())
