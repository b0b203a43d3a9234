"""`python -m saecore`: the command line."""

import os
import sys

from saecore.cli import QUICK_EXIT_COMMANDS, main

code = main()
if len(sys.argv) > 1 and sys.argv[1] in QUICK_EXIT_COMMANDS:
    # Unloading torch and numba takes ~0.6 s after the answer is out; these commands hold no open
    # resources (their files are written atomically and closed), so they skip interpreter teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
