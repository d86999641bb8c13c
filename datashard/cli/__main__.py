"""``python -m datashard.cli``: the ``datashard`` command."""

import sys

from datashard.cli import main

sys.exit(main())
