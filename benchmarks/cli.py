"""What the benchmark command lines in ``scripts/`` share: options made from a settings object, the recorded
command, list flags, run-or-render.

Every benchmark writes ``results/NAME.json`` and ``results/NAME.md`` and can
re-render the Markdown from the JSON without measuring again (``--render-only``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")
S = TypeVar("S")

__all__ = ["FACES_DEV", "command_line", "comma_separated", "run_benchmark", "run_or_render", "settings_from",
           "settings_parser", "setup_logging", "write_results"]

# The faces-dev pack where the real-faces benchmarks look for it: ../shared/data beside the repository.
FACES_DEV = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev")


def setup_logging() -> None:
    """INFO progress lines with timestamps; accelerate's per-step chatter silenced."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)


def settings_parser(doc: str, defaults: Any, table: str, *,
                    types: Mapping[str, Callable[[str], Any]] | None = None) -> argparse.ArgumentParser:
    """A benchmark script's parser: its docstring's first line, one option per name in ``table`` (``--help`` shows
    the default beside each help text).

    ``table`` lists the options in order, a line each: ``name: help text`` or names without help (``a, b, c``).
    ``--a-name`` for a field of the settings dataclass ``defaults`` takes its value there as default and is typed
    like it (an int, a float; a tuple: a comma-separated list of its items' type, the default as the example)
    unless ``types`` gives the type (a field whose default is None needs one). ``results_dir`` (default
    ``results``) and any other name that is not a field are not settings: the latter are on/off flags.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fields = {field.name for field in dataclasses.fields(defaults)}
    for line in table.strip().splitlines():
        names, with_help, help_text = line.partition(": ")
        for name in names.replace(",", " ").split():
            flag, option_help = "--" + name.replace("_", "-"), help_text.strip() if with_help else None
            if name == "results_dir":
                parser.add_argument(flag, default="results", help=option_help)
            elif name not in fields:
                parser.add_argument(flag, action="store_true", help=option_help)
            else:
                default = getattr(defaults, name)
                kind = (types or {}).get(name, _option_type(default))
                parser.add_argument(flag, type=kind, default=default, help=option_help)
    return parser


def _option_type(default: Any) -> Callable[[str], Any] | None:
    if isinstance(default, tuple) and default:
        return comma_separated(type(default[0]), ",".join(map(str, default)))
    return type(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else None


def settings_from(cls: Callable[..., S], args: argparse.Namespace, **values: Any) -> S:
    """The settings dataclass ``cls`` from the parsed options named like its fields, ``values`` added."""
    fields = {field.name for field in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in vars(args).items() if name in fields}, **values)


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


def run_benchmark(args: argparse.Namespace, argv: Sequence[str] | None, script: str, name: str, settings: Any,
                  run: Callable[..., dict[str, Any]], *,
                  write: Callable[[dict[str, Any], str | Path], tuple[Path, Path]],
                  render: Callable[[dict[str, Any]], str]) -> int:
    """A benchmark script's main once its options are parsed: progress logging, then ``run(settings, command=...)``
    (the command line recorded with the results) or, with ``--render-only``, the JSON already in ``--results-dir``;
    both files written, the Markdown printed."""
    setup_logging()
    command = command_line(script, argv)
    return run_or_render(args.results_dir, name, render_only=args.render_only,
                         run=lambda: run(settings, command=command), write=write, render=render)


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
