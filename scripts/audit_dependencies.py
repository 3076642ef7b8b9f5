#!/usr/bin/env python
"""Audit the pinned requirements for known vulnerabilities and record the result.

    python scripts/audit_dependencies.py [--output results/dependency_audit.md] [--strict]

Runs ``pip-audit`` on requirements.txt. Where pip-audit cannot look a pin up
(a registry mirror without per-version JSON), the project's PyPI JSON is
consulted instead: its ``vulnerabilities`` list describes the latest release,
so a pin equal to the latest release is audited that way and any other pin is
reported as not audited. Nothing is hidden: every package gets a row.
Exit status is 0 unless ``--strict`` is given and a vulnerability is found.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s#;]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def run_pip_audit(requirements: Path) -> dict:
    command = [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--format", "json",
               "--progress-spinner", "off"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        return {"error": (result.stderr or "pip-audit produced no JSON").strip().splitlines()[-1:]}


def latest_release_vulnerabilities(name: str) -> tuple[str | None, list | None]:
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=20) as response:
            data = json.load(response)
        return data["info"]["version"], data.get("vulnerabilities", [])
    except Exception:  # offline or mirror without JSON: reported as not audited
        return None, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "dependency_audit.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a vulnerability is found")
    args = parser.parse_args(argv)

    pins = read_pins(args.requirements)
    report = run_pip_audit(args.requirements)
    audited = {d["name"].lower(): d for d in report.get("dependencies", []) if "skip_reason" not in d}
    rows, found = [], 0
    for name, version in sorted(pins.items()):
        if name in audited or name.replace("_", "-") in audited:
            vulns = audited.get(name, audited.get(name.replace("_", "-")))["vulns"]
            status, how = (f"{len(vulns)} known: " + ", ".join(v["id"] for v in vulns)) if vulns else "none known", "pip-audit"
        else:
            latest, vulns = latest_release_vulnerabilities(name)
            if latest is None:
                status, how = "not audited (registry unreachable)", "-"
                vulns = []
            elif latest == version:
                status = (f"{len(vulns)} known: " + ", ".join(v.get("id", "?") for v in vulns)) if vulns else "none known"
                how = "PyPI JSON (pin is the latest release)"
            else:
                status, how, vulns = f"not audited (pin {version}, latest {latest}; no per-version data)", "-", []
        found += len(vulns)
        rows.append(f"| {name} | {version} | {status} | {how} |")

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "# Dependency audit", "",
        f"Generated {stamp} by `python scripts/audit_dependencies.py` over `requirements.txt` (direct pins).", "",
        "| package | pinned | known vulnerabilities | source |", "|---|---|---|---|", *rows, "",
        f"Total known vulnerabilities in audited pins: {found}.", "",
    ])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 1 if (args.strict and found) else 0


if __name__ == "__main__":
    raise SystemExit(main())
