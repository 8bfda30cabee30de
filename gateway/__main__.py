"""`python -m gateway` is `tradevine-gateway`."""

import sys

from gateway.cli import main

sys.exit(main())
