"""`python -m consumers` is `tradevine-consumers`."""

import sys

from consumers.cli import main

sys.exit(main())
