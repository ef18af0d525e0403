"""lstm_lightning's command line; see ``lstm_lightning/cli.py`` and ``--help``."""

import sys

from lstm_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
