"""``python -m yolobn.cli``."""

import sys

from yolobn.cli import main

sys.exit(main())
