"""Evaluate a detector on a dataset split: ``python scripts/evaluate.py --help`` (same as ``fakeface-evaluate``).

The command line lives in ``fakeface.cli.evaluate``.
"""
from fakeface.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
