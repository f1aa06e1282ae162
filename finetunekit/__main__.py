"""``python -m finetunekit``: the command line (see :mod:`finetunekit.cli`)."""

import sys

from finetunekit.cli import main

sys.exit(main())
