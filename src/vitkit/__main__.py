"""`python -m vitkit ...`: the command line, as torchrun launches it (`torchrun ... -m vitkit train ...`)."""

import sys

from vitkit.cli.main import main

sys.exit(main())
