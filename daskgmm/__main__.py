"""``python -m daskgmm CONFIG.yaml``: the same as ``python -m daskgmm.run``."""

import sys

from .run import main

sys.exit(main())
