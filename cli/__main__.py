"""``python -m cli``: the ``gatepass`` command without the installed console script."""

import sys

from cli.main import main

sys.exit(main())
