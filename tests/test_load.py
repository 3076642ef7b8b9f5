"""A short load test: the launched app (own process) under 4 concurrent browser-protocol clients.

The full run (8 clients x 200 requests per phase) is ``scripts/load_test.py``;
its numbers are in results/load_test.md. Same code, fewer requests; nothing
here is timed (the throughput target is judged by the full run's report).
"""
from __future__ import annotations

import pytest

from benchmarks.loadtest import (
    NOOP_API, NOOP_UPLOAD_API, RSS_GROWTH_BOUND_MB, VERDICT_API, build_load_images, run_load_test, save_load_model,
    start_server, stop_server,
)
from benchmarks.loadtest_clients import AppAnswerError, BrowserClient, make_client
from benchmarks.loadtest_report import render_report_markdown

# 40 requests are too few to tell a leak from lazy first-use allocations (a
# code path first taken after the short warm-up, allocator arenas), so the
# short run allows twice the full run's bound; the full run
# (scripts/load_test.py, results/load_test.md) applies RSS_GROWTH_BOUND_MB.
SHORT_RUN_RSS_BOUND_MB = 2 * RSS_GROWTH_BOUND_MB

pytest.importorskip("psutil")
# Every test shares one launched app and its phases (~30 s of CPU on 2 cores).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_load_test(clients=4, requests_per_client=10, workdir=tmp_path_factory.mktemp("load"))


def test_mixed_detect_calls_all_succeed(report):
    detect = report.phase("detect")
    assert detect.errors == []
    assert detect.ok == 4 * 10
    assert sum(detect.calls.values()) == detect.ok and len(detect.calls) >= 2   # really a mix
    assert report.server["alive_after"] is True


def test_verdict_only_calls_all_succeed_and_are_compared_with_the_noop(report):
    verdict = report.phase(VERDICT_API)
    assert verdict.errors == [] and verdict.ok == 4 * 10 and verdict.calls == {VERDICT_API: 40}
    ratio = report.targets()["verdict_vs_noop"]
    assert ratio["ratio"] > 0 and ratio["target"] == 0.8 and ratio["met"] == (ratio["ratio"] >= 0.8)
    lane = report.server["queue"]["endpoints"][VERDICT_API]
    assert lane["concurrency_limit"] >= 4 and lane["concurrency_id"] == VERDICT_API    # 4 clients can share a batch
    assert report.machine["cpu_flags"] is not None and len(report.machine["load_average"]) == 3


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
    assert ("PASS" if report.passed else "FAIL") in text and "no-op" in text
    assert f"| {VERDICT_API} | 40 | 0 |" in text and "verdict-only throughput vs the no-op endpoint" in text
    assert "p95" in text and "load average" in text
    # Where the time goes: each side's CPU per request; a verdict (decode + model) costs the server more than nothing.
    verdict, noop = (report.phase(n).cpu_per_request() for n in (VERDICT_API, NOOP_API))
    assert verdict["server"] > noop["server"] > 0 and verdict["clients"] > 0 and noop["clients"] > 0
    assert "## Where the time goes" in text and f"| {VERDICT_API} | {verdict['server']} |" in text
    # The upload no-op carries the same photo and does nothing with it: the verdict's own work is the difference.
    upload = report.phase(NOOP_UPLOAD_API)
    assert upload.errors == [] and upload.ok == 4 * 10 and upload.calls == {NOOP_UPLOAD_API: 40}
    assert "verdict-only throughput vs the upload no-op" in text and "the verdict's own work is" in text
    # --render-only rewrites the Markdown from the JSON alone: the same text
    import json

    assert render_report_markdown(json.loads(json.dumps(report.to_dict()))) == text


def _untimed(answer: dict) -> dict:
    """An answer without its server timings (the one part two calls of the same photo may differ in)."""
    return {k: v for k, v in answer.items() if k != "timings_ms"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("clients")
    process, url = start_server(save_load_model(work / "model"))
    try:
        yield url, build_load_images(work / "images", n=3)
    finally:
        stop_server(process)


def test_the_browser_client_gets_what_gradio_client_gets(served):
    # The load test's default client is only a cheaper driver if it asks and answers exactly as gradio_client does.
    from gradio_client import handle_file

    url, images = served
    browser, reference = make_client("browser", url), make_client("gradio_client", url)
    assert isinstance(browser, BrowserClient)
    try:
        for image in images:
            mine, theirs = (c.predict(handle_file(str(image)), api_name="/verdict") for c in (browser, reference))
            assert _untimed(mine) == _untimed(theirs) and mine["verdict"] in ("real", "fake", "uncertain")
        mine, theirs = (c.predict(handle_file(str(images[0])), False, False, api_name="/detect") for c in (browser, reference))
        assert len(mine) == len(theirs) == 2 and _untimed(mine[0]) == _untimed(theirs[0])   # gr.State left out, as there
        assert browser.predict(api_name="/noop") == "ok"
        files = [handle_file(str(p)) for p in images[:2]]
        table = browser.predict(files, api_name="/detect_batch")[0]
        assert [row[0] for row in table["data"] if "photo" in row] == [p.name for p in images[:2]]
        with pytest.raises(AppAnswerError, match="/verdict answered with an error") as refused:
            browser.predict({"path": "/etc/hostname"}, api_name="/verdict")    # a server path no upload made: refused
        assert refused.value.api_name == "verdict" and refused.value.event_id
    finally:
        browser.close()
    with pytest.raises(ValueError, match="unknown client kind"):
        make_client("curl", url)
