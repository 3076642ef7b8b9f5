"""Scan throughput, 1 process x 1 thread vs 2 x 1: ``python scripts/scan_benchmark.py`` -> results/scan.{json,md}.

The logic is in ``benchmarks.scan``.
"""
from benchmarks.scan import main

if __name__ == "__main__":
    raise SystemExit(main())
