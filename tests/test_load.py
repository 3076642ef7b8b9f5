"""A short load test: the launched app (own process) under 4 concurrent gradio_client clients.

The full run (16 clients x 200 requests) is ``scripts/load_test.py``; its
numbers are in results/load_test.md. Same code, fewer requests.
"""
from __future__ import annotations

import pytest

from benchmarks.loadtest import NOOP_API, RSS_GROWTH_BOUND_MB, render_report_markdown, run_load_test

# 40 requests are too few to tell a leak from lazy first-use allocations (a
# code path first taken after the short warm-up, allocator arenas), so the
# short run allows twice the full run's bound; the full run
# (scripts/load_test.py, results/load_test.md) applies RSS_GROWTH_BOUND_MB.
SHORT_RUN_RSS_BOUND_MB = 2 * RSS_GROWTH_BOUND_MB

pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_load_test(clients=4, requests_per_client=10, workdir=tmp_path_factory.mktemp("load"))


def test_mixed_detect_calls_all_succeed(report):
    detect = report.phase("detect")
    assert detect.errors == []
    assert detect.ok == 4 * 10
    assert sum(detect.calls.values()) == detect.ok and len(detect.calls) >= 2   # really a mix
    assert report.server["alive_after"] is True


def test_resident_memory_stays_within_the_bound(report):
    memory = report.phase("detect").memory_summary()
    assert memory and memory["peak"] > 0
    assert memory["growth_after_warmup"] <= SHORT_RUN_RSS_BOUND_MB, memory


def test_queue_limits_are_configured(report):
    queue = report.server["queue"]
    assert queue["max_size"] and queue["max_size"] >= 16          # 16 clients fit in the queue
    heavy = [queue["endpoints"][name] for name in ("detect", "detect_batch", "dataset_evaluate")]
    assert all(e["concurrency_limit"] and e["concurrency_limit"] <= 4 for e in heavy)
    assert len({e["concurrency_id"] for e in heavy}) == 1               # one CPU lane for heavy work
    assert report.server["max_file_size"] and report.server["max_file_size"] <= 100 * 2**20


def test_noop_baseline_and_report(report):
    noop = report.phase(NOOP_API)
    assert noop.errors == [] and noop.ok == 4 * 10 and noop.throughput_rps > 0
    text = render_report_markdown(report)
    assert ("PASS" if report.passed else "FAIL") in text and "no-op" in text and f"{report.phase('detect').throughput_rps:.2f}"[:3] in text
