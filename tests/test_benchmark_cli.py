"""benchmarks/cli.py: the options the benchmark scripts make from their settings, and the main they share."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from benchmarks.cli import comma_separated, run_benchmark, settings_from, settings_parser


@dataclass(frozen=True)
class Settings:
    data_dir: str
    epochs: int = 3
    rate: float = 0.5
    names: tuple[str, ...] = ("a", "b")
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None
    quiet: bool = False      # a field no option sets: keeps its default


TABLE = """
    data_dir: where the data is
    epochs, rate
    names, sizes, limit
    results_dir
    render_only: only re-render
    """


def _parser():
    return settings_parser("The test benchmark.\n\nMore.", Settings(data_dir="here"), TABLE, types={"limit": int})


def test_options_follow_the_table_with_the_settings_defaults_and_types():
    parser = _parser()
    assert parser.description == "The test benchmark."
    flags = [action.option_strings[-1] for action in parser._actions[1:]]
    assert flags == ["--data-dir", "--epochs", "--rate", "--names", "--sizes", "--limit", "--results-dir",
                     "--render-only"]
    assert vars(parser.parse_args([])) == {"data_dir": "here", "epochs": 3, "rate": 0.5, "names": ("a", "b"),
                                           "sizes": (1, 2), "limit": None, "results_dir": "results",
                                           "render_only": False}
    args = parser.parse_args(["--epochs", "5", "--rate", "0.25", "--names", "x, y,", "--sizes", "7", "--limit", "4",
                              "--render-only"])
    assert (args.epochs, args.rate, args.names, args.sizes, args.limit, args.render_only) == (
        5, 0.25, ("x", "y"), (7,), 4, True)
    help_text = " ".join(parser.format_help().split())
    assert "--data-dir DATA_DIR where the data is (default: here)" in help_text
    assert "--render-only only re-render (default: False)" in help_text
    assert "--epochs EPOCHS --rate RATE --names NAMES" in help_text     # argparse shows no default without help


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "x"], "invalid int value"),
    (["--sizes", "1,x"], "expected a list like 1,2"),
    (["--limit", "1.5"], "invalid int value"),
])
def test_a_bad_value_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        _parser().parse_args(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_from_takes_the_fields_among_the_options_and_the_values_given():
    args = _parser().parse_args(["--epochs", "9", "--results-dir", "out"])
    assert settings_from(Settings, args) == Settings(data_dir="here", epochs=9)
    assert settings_from(Settings, args, quiet=True) == Settings(data_dir="here", epochs=9, quiet=True)


def test_run_benchmark_runs_or_re_renders_and_writes_both_files(tmp_path, capsys):
    calls = []

    def run(settings, *, command):
        calls.append((settings, command))
        return {"value": settings.epochs}

    def write(data, results_dir):
        (tmp_path / "bench.json").write_text(json.dumps(data))
        return tmp_path / "bench.json", tmp_path / "bench.md"

    def render(data):
        return f"value {data['value']}"

    argv = ["--epochs", "4", "--results-dir", str(tmp_path)]
    args = _parser().parse_args(argv)
    assert run_benchmark(args, argv, "scripts/bench.py", "bench", settings_from(Settings, args), run,
                         write=write, render=render) == 0
    command = f"python scripts/bench.py --epochs 4 --results-dir {tmp_path}"
    assert calls == [(Settings(data_dir="here", epochs=4), command)]
    assert capsys.readouterr().out == "value 4\n"
    argv = ["--render-only", "--results-dir", str(tmp_path)]
    args = _parser().parse_args(argv)
    assert run_benchmark(args, argv, "scripts/bench.py", "bench", settings_from(Settings, args), run,
                         write=write, render=render) == 0
    assert len(calls) == 1 and capsys.readouterr().out == "value 4\n"


def test_comma_separated_reports_its_example():
    parse = comma_separated(int, "1,2")
    assert parse(" 3, 4,") == (3, 4)
    with pytest.raises(Exception, match="expected a list like 1,2"):
        parse("x")
