"""What the benchmark command lines in ``scripts/`` share: the recorded command, list flags, run-or-render.

Every benchmark writes ``results/NAME.json`` and ``results/NAME.md`` and can
re-render the Markdown from the JSON without measuring again (``--render-only``).
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")

__all__ = ["command_line", "comma_separated", "run_or_render", "setup_logging", "write_results"]


def setup_logging() -> None:
    """INFO progress lines with timestamps; accelerate's per-step chatter silenced."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command as a user would retype it, recorded beside the results (``argv`` None: this process's)."""
    return f"python {script} {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()


def comma_separated(kind: Callable[[str], T], example: str) -> Callable[[str], tuple[T, ...]]:
    """An argparse ``type`` for ``a,b,c`` lists of ``kind`` (empty items dropped; a bad item is a usage error)."""
    def parse(text: str) -> tuple[T, ...]:
        try:
            return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a list like {example}, got {text!r}") from None

    return parse


def run_or_render(results_dir: str | Path, name: str, *, render_only: bool, run: Callable[[], dict[str, Any]],
                  write: Callable[[dict[str, Any], str | Path], tuple[Path, Path]],
                  render: Callable[[dict[str, Any]], str]) -> int:
    """Measure with ``run()`` (or read ``results_dir/NAME.json`` when ``render_only``), write both files, print the
    Markdown; returns the exit status."""
    if render_only:
        data = json.loads((Path(results_dir) / f"{name}.json").read_text())
    else:
        data = run()
    _, md_path = write(data, results_dir)
    print(render(data))
    print(f"wrote {md_path} and its JSON", file=sys.stderr)
    return 0


def write_results(data: dict[str, Any], results_dir: str | Path, name: str,
                  render: Callable[[dict[str, Any]], str]) -> tuple[Path, Path]:
    """Write ``results_dir/NAME.json`` and the Markdown rendered from it (crash-safe); returns both paths."""
    from fakeface.utils.fileio import write_atomic

    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results / f"{name}.json", results / f"{name}.md"
    write_atomic(json_path, (json.dumps(data, indent=2) + "\n").encode())
    write_atomic(md_path, render(data).encode())
    return json_path, md_path
