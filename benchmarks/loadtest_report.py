"""The load test's report: ``results/load_test.md`` and ``.json`` from a :class:`benchmarks.loadtest.LoadReport`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from benchmarks.loadtest import NOOP_API, NOOP_UPLOAD_API, VERDICT_API, VERDICT_VS_NOOP_TARGET as TARGET_RATIO, LoadReport

__all__ = ["render_report_markdown", "save_report"]


def _phase_table(phases: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| phase | requests ok | errors | wall s | req/s | mean ms | p50 | p90 | p95 | p99 | max |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for phase in phases:
        lat = phase["latency_ms"] or {}
        cells = [lat.get(k, "") for k in ("mean", "p50", "p90", "p95", "p99", "max")]
        lines.append(f"| {phase['name']} | {phase['ok']} | {phase['errors']} | {phase['wall_s']} | "
                     f"{phase['throughput_rps']} | " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _cpu_lines(phases: dict[str, dict[str, Any]], client: str) -> list[str]:
    """Where the time goes: CPU per request on each side, and the ratio these clients allow at best."""
    cpu = {name: p.get("cpu_ms_per_request") or {} for name, p in phases.items()}
    if not all(cpu.get(name) for name in (VERDICT_API, NOOP_API)):
        return []
    lines = ["## Where the time goes", "", "CPU milliseconds per answered request (user + system, all threads), on the "
             f"same cores: the app's process and the {client} driving it.", "",
             "| phase | server CPU ms | clients CPU ms | total |", "|---|---|---|---|"]
    lines += [f"| {name} | {c['server']} | {c['clients']} | {round(c['server'] + c['clients'], 1)} |"
              for name, c in cpu.items() if c]
    v, n = cpu[VERDICT_API], cpu[NOOP_API]
    ceiling = (n["server"] + n["clients"]) / (n["server"] + v["clients"])
    allowed = (n["server"] + n["clients"]) / TARGET_RATIO - v["clients"]
    u = cpu.get(NOOP_UPLOAD_API)
    transport = (f" The upload no-op shows what carrying the photo costs: {u['server']} ms of server and {u['clients']} "
                 f"ms of client CPU, so the verdict's own work is {round(v['server'] - u['server'], 1)} ms of server "
                 "CPU." if u else "")
    lines += ["", f"A verdict costs the server {round(v['server'] - n['server'], 1)} ms more CPU than the no-op, and the "
              f"clients {round(v['clients'] - n['clients'], 1)} ms more (the photo's upload).{transport} " + (
                  f"For {TARGET_RATIO:.0%} of the no-op's pace, the server may spend at most {round(allowed, 1)} ms per "
                  f"verdict with these clients (it spent {v['server']}). " if allowed > 0 else
                  f"For {TARGET_RATIO:.0%} of the no-op's pace, the clients' own CPU per verdict leaves the server "
                  f"nothing to spend: no server reaches it with these clients on these cores. ")
              + f"A verdict costing the server no more than the no-op would reach {ceiling:.0%}.", ""]
    return lines


def _client_words(data: dict[str, Any]) -> str:
    """What drove the app, in words (reports written before ``client_kind`` existed used gradio_client)."""
    if data.get("client_kind", "gradio_client") == "gradio_client":
        return "`gradio_client` clients"
    return ("browser-protocol clients (`httpx`: the photo to `/gradio_api/upload`, the call to `queue/join`, the "
            "answer from the session's event stream, as a visitor's browser sends them)")


def _targets_lines(targets: dict[str, Any], phases: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Targets", ""]
    ratio = targets.get("verdict_vs_noop")
    if ratio:
        lines.append(f"- verdict-only throughput vs the no-op endpoint: **{ratio['ratio']:.1%}** "
                     f"({phases[VERDICT_API]['throughput_rps']} vs {phases[NOOP_API]['throughput_rps']} req/s), "
                     f"target >= {ratio['target']:.0%}: **{'met' if ratio['met'] else 'missed'}**")
    upload = targets.get("verdict_vs_noop_upload")
    if upload:
        lines.append(f"- verdict-only throughput vs the upload no-op (the same photo uploaded to an endpoint that "
                     f"does nothing with it; not the target, the verdict's own share): **{upload['ratio']:.1%}** "
                     f"({phases[VERDICT_API]['throughput_rps']} vs {phases[NOOP_UPLOAD_API]['throughput_rps']} req/s)")
        if phases.get(NOOP_API, {}).get("throughput_rps"):
            share = phases[NOOP_UPLOAD_API]["throughput_rps"] / phases[NOOP_API]["throughput_rps"]
            lines.append(f"- the upload no-op itself, which does nothing with the photo, runs at **{share:.1%}** of the "
                         "no-op's requests per second" + (": receiving the photo alone uses up the margin the target "
                                                          "allows" if share < TARGET_RATIO else ""))
    if "detect" in phases and NOOP_API in phases and phases[NOOP_API]["throughput_rps"]:
        detect = phases["detect"]
        lines.append(f"- full-analysis mix: {detect['throughput_rps'] / phases[NOOP_API]['throughput_rps']:.1%} of "
                     f"the no-op's requests per second; p50 {detect['latency_ms'].get('p50')} ms, "
                     f"p95 {detect['latency_ms'].get('p95')} ms")
    lines.append(f"- errors: {targets['zero_errors']['errors']}: **{'met' if targets['zero_errors']['met'] else 'missed'}**")
    memory = targets["flat_memory"]
    lines.append(f"- memory growth after warm-up (largest over the model phases): {memory['growth_mb']} MiB, bound "
                 f"{memory['bound_mb']:.0f} MiB: **{'met' if memory['met'] else 'missed'}**")
    return lines + [""]


def render_report_markdown(report: LoadReport | dict[str, Any]) -> str:
    """The committed ``results/load_test.md``, from the report or its JSON (``LoadReport.to_dict``)."""
    data = report.to_dict() if isinstance(report, LoadReport) else report
    phases = {p["name"]: p for p in data["phases"]}
    lines = [
        "# Load test", "",
        f"{data['clients']} concurrent {_client_words(data)} x {data['requests_per_client']} requests each per "
        "phase, against the launched app (own process): the full-analysis mix, verdict-only requests (`/verdict`, "
        "concurrent calls share model calls), then a no-op endpoint on the same server (the baseline), and a no-op "
        "that takes the photo as `/verdict` does (what carrying the photo costs).", "",
        f"**Result: {'PASS' if data['passed'] else 'FAIL'}** (zero errors; resident memory growth after warm-up "
        f"<= {data['rss_growth_bound_mb']:.0f} MiB).", "",
        *_phase_table(data["phases"]), "",
        *_targets_lines(data["targets"], phases),
        *_cpu_lines(phases, _client_words(data)),
    ]
    if "detect" in phases:
        detect = phases["detect"]
        lines += ["Server resident memory (MiB) during the detect phase: "
                  + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in detect["rss_mb"].items()) + ".", "",
                  f"Detect mix (calls made): {detect['calls']}; `fast` = no Grad-CAM and no robustness check, "
                  "`full` = both, `explain` = Grad-CAM only, `batch` = two files through `/detect_batch`.", ""]
    server = data["server"]
    queue = server.get("queue") or {}
    machine = data["machine"]
    lines += ["## Server", "", f"- model: {server.get('model')}",
              f"- upload limit (max_file_size): {server.get('max_file_size')} bytes",
              f"- queue: at most {queue.get('max_size')} waiting requests, default concurrency "
              f"{queue.get('default_concurrency_limit')}; per endpoint (limit, shared lane): " + ", ".join(
                  f"`{k}` {v['concurrency_limit']} ({v['concurrency_id']})" for k, v in queue.get("endpoints", {}).items()),
              f"- still serving after the run: {server.get('alive_after')}", "",
              "## Machine", "", f"- CPU: {machine.get('cpu')}, flags {', '.join(machine.get('cpu_flags') or []) or 'none'}, "
              f"{machine.get('cpus')} cores, {machine.get('memory_gb')} GB",
              f"- load average before / after: {machine.get('load_average')} / {machine.get('load_average_after')}",
              "- the CPU cores may be shared with other work during the run (see the load average), so throughput is "
              "a lower bound and latencies are noisy.", ""]
    lines += [f"- {note}" for note in data.get("notes") or []]
    if any(p["error_examples"] for p in data["phases"]):
        lines += ["", "## Errors", ""] + [f"- {p['name']}: {e}" for p in data["phases"] for e in p["error_examples"]]
    return "\n".join(lines).rstrip() + "\n"


def save_report(report: LoadReport, output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``load_test.json`` and ``load_test.md`` into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "load_test.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    md_path = output_dir / "load_test.md"
    md_path.write_text(render_report_markdown(report))
    return json_path, md_path
