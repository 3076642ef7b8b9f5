"""Load test: 8 concurrent clients x 200 verdict, no-op and full-analysis requests against the app.

    python scripts/load_test.py [--clients 16] [--requests 200] [--model DIR] [--client gradio_client]

The clients speak the browser's protocol (upload, queue, event stream) at about 3 ms of CPU a request;
``--client gradio_client`` drives the app through gradio_client instead (65-105 ms a request, on the same cores).

Starts the app in its own process (a random-weight MobileNetV2 at 128 px
unless --model is given), drives its verdict-only endpoint, a no-op endpoint on
the same server and the full-analysis mix the same way, and writes
``load_test.json`` and ``load_test.md`` with the targets judged (verdicts at
>= 80 % of the no-op's requests per second, zero errors, flat memory).
Exit code 1 when any request failed or memory grew past the bound.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="requests per client")
    p.add_argument("--model", default=None, help="detector folder (default: a random-weight one, speed only)")
    p.add_argument("--output-dir", default="results")
    p.add_argument("--server-log", default=None, help="file for the app's own output")
    p.add_argument("--no-noop", action="store_true", help="skip the no-op baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client", choices=("browser", "gradio_client"), default="browser",
                   help="what drives the app: the browser's protocol over httpx (default) or gradio_client")
    p.add_argument("--render-only", action="store_true", help="rewrite load_test.md from the existing load_test.json")
    args = p.parse_args(argv)
    if args.render_only:
        import json
        from pathlib import Path

        from benchmarks.loadtest_report import render_report_markdown

        folder = Path(args.output_dir)
        (folder / "load_test.md").write_text(render_report_markdown(json.loads((folder / "load_test.json").read_text())))
        return 0

    from benchmarks.loadtest import run_load_test
    from benchmarks.loadtest_report import render_report_markdown, save_report

    report = run_load_test(clients=args.clients, requests_per_client=args.requests, model_dir=args.model,
                           seed=args.seed, noop=not args.no_noop, server_log=args.server_log, client_kind=args.client,
                           progress=lambda message: print(message, flush=True))
    json_path, md_path = save_report(report, args.output_dir)
    print(render_report_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
