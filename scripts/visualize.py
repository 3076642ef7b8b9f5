"""Plot a detector's behaviour on a dataset split: ``python scripts/visualize.py --help`` (same as ``fakeface-visualize``).

The command line lives in ``fakeface.cli.visualize``.
"""
from fakeface.cli.visualize import main

if __name__ == "__main__":
    raise SystemExit(main())
