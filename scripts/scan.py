"""Bulk scan: ``python scripts/scan.py SOURCE --model ID_OR_DIR --output-dir DIR`` (see fakeface.scan.cli)."""
import sys

from fakeface.scan.cli import main

if __name__ == "__main__":
    sys.exit(main())
