"""``python -m aligngym.benchmarks run|report|list|throughput|serve``: the same command as the ``aligngym`` script."""

import sys

from aligngym.benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
