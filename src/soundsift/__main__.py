"""``python -m soundsift``: the command line (``soundsift.cli.main``)."""

import sys

from soundsift.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
