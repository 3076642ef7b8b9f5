"""Bulk scans: a folder, a dataset folder or a Hub dataset scored into one table, resumable and sharded.

``fakeface-scan`` / ``scripts/scan.py`` (:func:`fakeface.scan.cli.main`) is the
command; :func:`fakeface.scan.runner.run_scan` does the work. See docs/scan.md.
"""
from fakeface.scan.runner import ScanConfig, ScanSummary, format_summary, load_scan_model, run_scan
from fakeface.scan.sources import ScanItem, ScanSource, ScanSourceError, iter_items, resolve_scan_source
from fakeface.scan.store import SCHEMA, ScanOutputError, merge_parts, read_done_keys

__all__ = [
    "SCHEMA", "ScanConfig", "ScanItem", "ScanOutputError", "ScanSource", "ScanSourceError", "ScanSummary",
    "format_summary", "iter_items", "load_scan_model", "merge_parts", "read_done_keys", "resolve_scan_source",
    "run_scan",
]
