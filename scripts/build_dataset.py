"""Build the face dataset: ``python scripts/build_dataset.py --help`` (same as ``fakeface-build-dataset``).

The command line lives in ``fakeface.cli.build_dataset``; see docs/dataset.md.
"""
from fakeface.cli.build_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
