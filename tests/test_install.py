"""`pip install .` gives a working fakeface: package data, console scripts, no repository needed.

The package is built from a copy of the files a source distribution carries
and installed into a fresh virtual environment outside the repository. That
environment reuses the dependencies already installed for the tests (a .pth
line pointing at this interpreter's site-packages), so pip sees them as
satisfied and nothing is downloaded. Every command runs from a folder outside
the repository with no PYTHONPATH, so only the installed copy can answer.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the build needs: pyproject reads requirements*.txt (dependencies) and README.md (description).
SOURCE_FILES = ("pyproject.toml", "README.md", "requirements.txt", "requirements-dev.txt")
CONSOLE_SCRIPTS = ("fakeface-train", "fakeface-build-dataset", "fakeface-generate", "fakeface-evaluate",
                   "fakeface-visualize", "fakeface-app", "fakeface-scan")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _copy_sources(source: Path, packages: tuple[str, ...] = ("fakeface",), extra: tuple[str, ...] = ()) -> None:
    source.mkdir()
    for name in SOURCE_FILES + extra:
        shutil.copy2(REPO_ROOT / name, source / name)
    for package in packages:
        shutil.copytree(REPO_ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _bare_venv(venv: Path) -> tuple[Path, Path, dict[str, str]]:
    """(python, site-packages, env) of a venv without pip that sees the test interpreter's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    # The test interpreter's packages, after the venv's own (a .pth line appends to sys.path).
    (purelib / "repo_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", GRADIO_ANALYTICS_ENABLED="False")
    return python, purelib, env


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, bin dir, site-packages, env, cwd) of a fresh venv with fakeface installed from a copy of the sources."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    _copy_sources(source)
    venv = root / "venv"
    python, purelib, env = _bare_venv(venv)
    cwd = root / "elsewhere"
    cwd.mkdir()
    # Non-editable, no build isolation (setuptools comes from the dependencies), no dependency resolution
    # beyond what is installed: pip checks the pins in requirements.txt against the reused site-packages.
    done = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-build-isolation", str(source)],
                cwd=cwd, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return python, venv / "bin", purelib, env, cwd


def test_import_comes_from_the_installed_copy_with_its_package_data(installed):
    python, _, purelib, env, cwd = installed
    probe = (
        "import json, importlib.metadata as md, importlib.resources as res, fakeface, fakeface.training.card as card\n"
        "examples = res.files('fakeface.app') / 'examples'\n"
        "print(json.dumps({'file': fakeface.__file__, 'template': str(card.TEMPLATE),\n"
        "  'template_text': card.TEMPLATE.read_text(), 'examples': sorted(p.name for p in examples.iterdir()),\n"
        "  'requires': md.requires('fakeface'), 'scripts': sorted(e.name for e in md.entry_points(group='console_scripts')\n"
        "  if e.dist is not None and e.dist.name == 'fakeface')}))"
    )
    done = _run([str(python), "-c", probe], cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).is_relative_to(purelib), info["file"]
    assert Path(info["template"]).is_relative_to(purelib), info["template"]
    # The same template as the repository's top-level model_card.md (a link to the packaged file, not a copy).
    assert info["template_text"] == (REPO_ROOT / "model_card.md").read_text()
    assert info["examples"] == sorted(p.name for p in (REPO_ROOT / "fakeface" / "app" / "examples").iterdir())
    pins = [line.strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert sorted(r for r in info["requires"] if "extra ==" not in r) == sorted(pins)
    assert info["scripts"] == sorted(CONSOLE_SCRIPTS)


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS)
def test_console_script_help(installed, script):
    _, bin_dir, _, env, cwd = installed
    done = _run([str(bin_dir / script), "--help"], cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"usage: {script}"), done.stdout[:300]


def test_installed_commands_build_a_dataset_and_train_a_release_with_its_card(installed):
    """fakeface-build-dataset + fakeface-train from the install: the release's README.md is the packaged card."""
    _, bin_dir, _, env, cwd = installed
    built = _run([str(bin_dir / "fakeface-build-dataset"), "--synthetic", "48", "--synthetic-size", "48",
                  "--output-dir", "data", "--seed", "0", "--no-progress"], cwd=cwd, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    trained = _run([str(bin_dir / "fakeface-train"), "--dataset", "data", "--output-dir", "release",
                    "--model", "mobilenetv2_050", "--from-scratch", "--input-size", "32", "--batch-size", "8",
                    "--epochs", "1", "--log-with", "none", "--no-robustness", "--no-plots", "--no-fast-path"],
                   cwd=cwd, env={**env, "OMP_NUM_THREADS": "1"})
    assert trained.returncode == 0, trained.stderr[-3000:]
    card = (cwd / "release" / "README.md").read_text()
    report = json.loads((cwd / "release" / "eval_results.json").read_text())
    assert "{{" not in card and "{%" not in card
    # Sentences of the template, filled with this run's numbers.
    assert "A real-vs-AI-generated face detector: a timm `mobilenetv2_050`" in card
    assert f"{report['overall']['n']} images" in card
    assert "## Results" in card


def test_make_editable_installs_the_checkout_and_leaves_its_tree_as_it_was(tmp_path):
    """The Makefile's editable install (make setup's last step) writes nothing into the checkout: no build/ folder
    (a second copy of the package for every tool that walks the tree), no egg-info; fakeface and the dev-only
    benchmarks/ then import from the checkout itself."""
    source = tmp_path / "source"
    _copy_sources(source, packages=("fakeface", "benchmarks"), extra=("Makefile",))
    python, _, env = _bare_venv(tmp_path / "venv")
    before = _tree(source)
    done = _run(["make", "--no-print-directory", "-C", str(source), "editable", f"BIN={python.parent}"],
                cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(_tree(source) - before) == []
    probe = "import json, fakeface, benchmarks; print(json.dumps([fakeface.__file__, benchmarks.__file__]))"
    done = _run([str(python), "-c", probe], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for module_file in json.loads(done.stdout.strip().splitlines()[-1]):
        assert Path(module_file).is_relative_to(source), module_file
