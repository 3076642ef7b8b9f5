"""Bulk scans: a folder, a dataset folder or a Hub dataset scored into one table, resumable and sharded.

``fakeface-scan`` / ``scripts/scan.py`` (:func:`fakeface.scan.cli.main`) is the
command; :func:`fakeface.scan.runner.run_scan` does the work. See docs/scan.md.

The names below load on first use, so that ``python -m fakeface.scan.cli``
pins its threads before anything imports torch.
"""
from importlib import import_module

_HOMES = {
    "fakeface.scan.runner": ("ScanConfig", "ScanSummary", "format_summary", "load_scan_model", "run_scan"),
    "fakeface.scan.sources": ("ScanItem", "ScanSource", "ScanSourceError", "iter_items", "resolve_scan_source"),
    "fakeface.scan.store": ("SCHEMA", "ScanOutputError", "merge_parts", "read_done_keys"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOME_OF[name]), name)
