"""`python -m versatune_hf demo` is `versatune demo`."""

import sys

from .cli import main

sys.exit(main())
