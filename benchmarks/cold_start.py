"""Cold start of the Space: ``python app.py`` to the first ``/verdict`` answered, in a requirements.txt-only venv.

Run with ``python scripts/cold_start_benchmark.py`` (writes ``results/cold_start.{json,md}``).

What a Space does: a venv from ``requirements.txt`` alone (:func:`space_python`, the one
``tests/test_space.py`` builds and caches in ``.cache/space-venv``), ``python app.py`` from the
checkout with ``FAKEFACE_MODEL`` pointing at a small release trained by ``train.py`` (face crop on,
int8 fast path exported: :func:`train_small_release`), and a visitor who asks for a verdict as soon
as the server answers. :func:`running_app` starts it and connects a ``gradio_client.Client``
(polling every ``poll_s``); the cold start is process start to the first ``/verdict`` answered (a
group photo, so the face stage runs). Per run it also records when the server printed its URL and
when the models were ready (the app's own log lines, timed as they arrive) and the app process's
CPU time (all threads) up to the answer: on a machine other jobs keep busy, wall time also counts
the waiting, CPU time much less.

Page cache: *warm* runs follow another run; *cold* runs first evict the files the app reads (the
venv, the base interpreter's library, the checkout, the release) from the page cache with
``posix_fadvise(DONTNEED)``, file by file: what ``echo 3 > /proc/sys/vm/drop_caches`` does for
these files, without dropping every other process's cache on a shared machine. Pages another
process has mapped stay resident; the run records how much of the largest files left the cache.

Several checkouts (e.g. a copy of the tree before a change, and the tree itself) are measured in
interleaved rounds with the same venv and release, so their difference is measured side by side.
Each checkout also gets an import profile (:func:`import_profile`): the modules loaded, which heavy
packages among them, and the CPU time, after ``import app`` (the page built), after the models
loaded and after the first verdict; and ``python -X importtime -c "import app"`` summed by package.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPACE_VENV = REPO / ".cache" / "space-venv"
GROUP_PHOTO = REPO.parent / "shared" / "data" / "faces-dev" / "real" / "group-photos-ulfd" / "ulfd_2.jpg"
TARGET_S = 5.0
SPACE_VENV_DISK_GB = 8.0     # what `pip install -r requirements.txt` takes (6.8 GB measured), with room
# Packages the first verdict does not need: they load on first use (training, datasets, plots, generation,
# evaluation, the torch model for Grad-CAM, C2PA provenance). tests/test_cold_start.py checks that the page and
# the first verdict leave them unloaded.
HEAVY_MODULES = ("openai", "datasets", "matplotlib", "sklearn", "scipy", "accelerate", "transformers", "tensorboard",
                 "onnx", "onnxscript", "timm", "torchvision", "torch", "cv2", "c2pa")
SERVER_UP = "Running on local URL"
MODELS_READY = "models ready in"


# --------------------------------------------------------------------------- the Space's venv and release

def requirements_digest() -> str:
    return hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest()


def space_python(venv: Path = SPACE_VENV) -> Path:
    """A venv with ``pip install -r requirements.txt`` and nothing else (what a Space builds), cached in ``venv``
    and rebuilt whenever requirements.txt changes."""
    python, stamp = venv / "bin" / "python", venv / ".requirements.sha256"
    if python.exists() and stamp.is_file() and stamp.read_text().strip() == requirements_digest():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(venv.parent).free / 1e9
    if free_gb < SPACE_VENV_DISK_GB:
        # pip would fail half-way with "No space left on device" (a CUDA torch alone is 5 GB); say it first.
        raise OSError(f"the Space venv ({venv}) needs about {SPACE_VENV_DISK_GB:.0f} GB of disk; "
                      f"{free_gb:.1f} GB free there (old clones or venvs?)")
    # The interpreter behind the running venv: Python 3.11, as the README's front matter asks of the Space.
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REPO / "requirements.txt")],
                   check=True, timeout=1500)
    stamp.write_text(requirements_digest() + "\n")
    return python


def train_small_release(workdir: Path, *, python: str = sys.executable) -> Path:
    """A small release trained by train.py with the face crop on (synthetic stand-ins have no faces: kept whole);
    train.py exports its int8 fast path, as for any release."""
    data, output = workdir / "data", workdir / "release"
    subprocess.run([python, str(REPO / "scripts" / "build_dataset.py"), "--synthetic", "48",
                    "--output-dir", str(data), "--seed", "0"], check=True, cwd=REPO, timeout=600)
    subprocess.run([python, str(REPO / "train.py"), "--dataset", str(data), "--output-dir", str(output),
                    "--model", "mobilenetv2_050", "--recipe", "robust", "--input-size", "32", "--epochs", "1",
                    "--batch-size", "16", "--log-with", "none", "--no-plots", "--no-robustness", "--from-scratch"],
                   check=True, cwd=REPO, timeout=900)
    return output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_environment(release: Path, port: int, hf_home: Path) -> dict[str, str]:
    """The Space's environment: this one without FAKEFACE_*/VIRTUAL_ENV/PYTHON* settings, the release, the port,
    offline Hub, no analytics; output unbuffered so the app's lines are timed when written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKEFACE_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(FAKEFACE_MODEL=str(release), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost",
               HF_HOME=str(hf_home), MALLOC_ARENA_MAX="2", PYTHONUNBUFFERED="1")
    return env


# --------------------------------------------------------------------------- one run of app.py

def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a running process (all its threads), from /proc; None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RunningApp:
    """``app.py`` in a child process, its output timed line by line, and a client once it answers."""

    process: subprocess.Popen
    started: float                                   # time.perf_counter() just before the process started
    log_path: Path
    lines: list[tuple[float, str]] = field(default_factory=list)   # (seconds since start, line)
    client: Any = None
    connected_s: float | None = None

    def log_tail(self, chars: int = 3000) -> str:
        return "".join(line for _, line in self.lines)[-chars:]

    def seen_at(self, text: str) -> float | None:
        """Seconds from start to the first output line containing ``text`` (None: not yet)."""
        return next((at for at, line in list(self.lines) if text in line), None)

    def cpu_s(self) -> float | None:
        return process_cpu_s(self.process.pid)


def _pump(app: RunningApp) -> None:
    """Copy the app's output into its log file, noting when each line arrived."""
    with app.log_path.open("w") as log:
        for line in iter(app.process.stdout.readline, ""):
            app.lines.append((time.perf_counter() - app.started, line))
            log.write(line)
            log.flush()


def _connect(app: RunningApp, url: str, poll_s: float, timeout_s: float) -> None:
    from gradio_client import Client

    while app.client is None:
        if app.process.poll() is not None:
            time.sleep(0.2)   # the last lines
            raise RuntimeError(f"app.py exited with {app.process.returncode}:\n{app.log_tail()}")
        if time.perf_counter() - app.started > timeout_s:
            raise RuntimeError(f"app.py did not serve within {timeout_s:.0f} s:\n{app.log_tail()}")
        try:
            app.client = Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(poll_s)
    app.connected_s = time.perf_counter() - app.started


@contextlib.contextmanager
def running_app(python: Path | str, release: Path, workdir: Path, *, checkout: Path = REPO, poll_s: float = 0.2,
                timeout_s: float = 600.0, nice: int | None = None) -> Iterator[RunningApp]:
    """``python app.py`` from ``checkout`` serving ``release``, with a connected ``gradio_client.Client``;
    stopped on exit. Raises RuntimeError with the log's end when the app exits or does not serve in time.
    ``nice``: the app's scheduling priority (below 0 needs root), else this process's."""
    import gradio_client  # noqa: F401 - imported before the clock starts, not on the app's time

    port = free_port()
    env = app_environment(release, port, workdir / "hf")
    started = time.perf_counter()
    priority = None if nice is None else (lambda: os.setpriority(os.PRIO_PROCESS, 0, nice))
    process = subprocess.Popen([str(python), "app.py"], cwd=checkout, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, preexec_fn=priority)
    app = RunningApp(process, started, workdir / "app.log")
    pump = threading.Thread(target=_pump, args=(app,), daemon=True)
    pump.start()
    try:
        _connect(app, f"http://127.0.0.1:{port}/", poll_s, timeout_s)
        yield app
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        pump.join(timeout=10)


def first_verdict_run(python: Path | str, release: Path, image: Path, workdir: Path, *,
                      checkout: Path = REPO, nice: int | None = None) -> dict[str, Any]:
    """One cold start: process start to the first ``/verdict`` on ``image`` answered, with its milestones."""
    from gradio_client import handle_file

    workdir.mkdir(parents=True, exist_ok=True)
    with running_app(python, release, workdir, checkout=checkout, nice=nice) as app:
        result = app.client.predict(handle_file(str(image)), api_name="/verdict")
        cold_start = time.perf_counter() - app.started
        cpu = app.cpu_s()
        server_up, models_ready = app.seen_at(SERVER_UP), app.seen_at(MODELS_READY)
        connected = app.connected_s
    return {"nice": os.nice(0) if nice is None else nice, "cold_start_s": cold_start, "app_cpu_s": cpu,
            "server_up_s": server_up, "connected_s": connected,
            "models_ready_s": models_ready, "verdict": result.get("verdict"), "mode": result.get("mode"),
            "faces": len(result.get("faces") or []), "load_average": list(os.getloadavg())}


# --------------------------------------------------------------------------- the page cache

def _files_below(roots: Sequence[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink():
                    yield path


def resident_bytes(paths: Sequence[Path]) -> int | None:
    """Bytes of ``paths`` in the page cache (util-linux ``fincore``), None where it is not installed."""
    if not paths or shutil.which("fincore") is None:
        return None
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                           *map(str, paths)], capture_output=True, text=True)
    return sum(int(v) for v in done.stdout.split() if v.isdigit())


def evict_page_cache(roots: Sequence[Path], *, sample: int = 20) -> dict[str, Any]:
    """Drop every file below ``roots`` from the page cache (``posix_fadvise(DONTNEED)``); how much of the
    ``sample`` largest files was resident before and after."""
    files = list(_files_below(roots))
    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:sample]
    before = resident_bytes(largest)
    for path in files:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return {"files": len(files), "largest_bytes": sum(p.stat().st_size for p in largest),
            "largest_resident_before": before, "largest_resident_after": resident_bytes(largest)}


def app_file_roots(python: Path, checkout: Path, release: Path) -> list[Path]:
    """What ``python app.py`` reads: the venv, the base interpreter's library, the checkout, the release."""
    venv = Path(python).parent.parent
    base = Path(subprocess.run([str(python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True,
                               text=True, check=True).stdout.strip())
    return [venv, *sorted(base.glob("lib/python3*")), *sorted(base.glob("lib/libpython*")), checkout, release]


# --------------------------------------------------------------------------- what the first verdict imports

_PROFILE_CHILD = r"""
import json, sys, time
heavy, image = json.loads(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
stages = []
def stage(name):
    stages.append({"stage": name, "modules": len(sys.modules), "heavy": [m for m in heavy if m in sys.modules],
                   "cpu_s": round(time.process_time(), 3), "wall_s": round(time.perf_counter() - t0, 3)})
import app
stage("import app (page built)")
ctx = app.demo.fakeface_context
models = ctx.registry.load()
stage("models loaded")
from fakeface.app.tabs.detect import verdict
result = verdict(ctx, image)
stage("first verdict")
print(json.dumps({"stages": stages, "verdict": result["verdict"], "mode": result["mode"],
                  "runtime": [getattr(m, "runtime", None) for m in models]}))
"""


def importtime_by_package(stderr: str, top: int = 12) -> dict[str, Any]:
    """``-X importtime`` output summed by top-level package (self times, ms), largest first, and the total."""
    by_package: dict[str, float] = {}
    for match in re.finditer(r"^import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", stderr, flags=re.M):
        package = match[2].split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(match[1]) / 1e3
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
    return {"total_ms": round(sum(by_package.values()), 1), "packages": len(by_package),
            "top_ms": {name: round(ms, 1) for name, ms in ranked[:top]}}


def import_profile(python: Path | str, release: Path, image: Path, workdir: Path, *,
                   checkout: Path = REPO) -> dict[str, Any]:
    """Modules and CPU time after ``import app``, the models' load and the first verdict (in one process, no
    server), and ``-X importtime`` of ``import app`` by package."""
    env = app_environment(release, free_port(), workdir / "hf")
    done = subprocess.run([str(python), "-c", _PROFILE_CHILD, json.dumps(HEAVY_MODULES), str(image)], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"import profile failed:\n{done.stderr[-3000:]}")
    profile = json.loads(done.stdout.strip().splitlines()[-1])
    timed = subprocess.run([str(python), "-X", "importtime", "-c", "import app"], cwd=checkout, env=env,
                           capture_output=True, text=True, timeout=600)
    profile["importtime"] = importtime_by_package(timed.stderr)
    return profile


# --------------------------------------------------------------------------- the benchmark

@dataclass(frozen=True)
class ColdStartConfig:
    checkouts: tuple[str, ...] = ("this tree=.",)   # LABEL=FOLDER, each a checkout with app.py
    rounds: int = 3                                  # runs per checkout, page-cache state and priority
    nice: tuple[int, ...] = (0,)                     # the app's priorities (below 0, root: the machine's other
                                                     # jobs yield, as on an idle machine)
    cold: bool = True                                # also runs with the app's files evicted from the page cache
    release: str | None = None                       # a release folder; None: train the small one (cached)
    image: str = str(GROUP_PHOTO)
    workdir: str = str(REPO / ".cache" / "cold-start")


def parse_checkouts(items: Sequence[str]) -> dict[str, Path]:
    """``LABEL=FOLDER`` (or a bare folder, labelled by itself) -> {label: folder}; each must hold app.py."""
    checkouts = {}
    for item in items:
        label, _, folder = item.rpartition("=") if "=" in item else (item, "", item)
        path = (REPO / folder).resolve()
        if not (path / "app.py").is_file():
            raise ValueError(f"{path} has no app.py: not a checkout of this project")
        checkouts[label] = path
    return checkouts


def _release(config: ColdStartConfig) -> Path:
    if config.release:
        return Path(config.release).resolve()
    cached = Path(config.workdir) / "train" / "release"
    if (cached / "fastpath.json").is_file():
        return cached
    shutil.rmtree(cached.parent, ignore_errors=True)
    return train_small_release(cached.parent)


def describe_release(release: Path, *, trained_here: bool) -> dict[str, Any]:
    config = json.loads((release / "config.json").read_text())
    block = config.get("fakeface") or {}
    return {"architecture": config.get("architecture"), "input_size": config["pretrained_cfg"].get("input_size"),
            "face_crop": "face_crop" in block, "panel": "panel" in block,
            "int8_fast_path": (release / "model.int8.onnx").is_file(),
            "trained_by": "train.py, as tests/test_space.py does" if trained_here else str(release)}


def _timed_runs(python: Path, release: Path, image: Path, checkouts: Mapping[str, Path],
                config: ColdStartConfig) -> list[dict[str, Any]]:
    """Interleaved rounds (the checkouts' order rotated each round): per checkout and priority, a warm run,
    then a cold one."""
    work, labels, runs = Path(config.workdir), list(checkouts), []
    for round_ in range(config.rounds):
        for label in labels[round_ % len(labels):] + labels[:round_ % len(labels)]:
            for nice, cache in [(n, c) for n in config.nice for c in (("warm", "cold") if config.cold else ("warm",))]:
                eviction = None
                if cache == "cold":
                    eviction = evict_page_cache(app_file_roots(python, checkouts[label], release))
                run = first_verdict_run(python, release, image, work / "runs" / f"{label}-{cache}-{nice}-{round_}",
                                        checkout=checkouts[label], nice=nice)
                runs.append({"checkout": label, "cache": cache, "round": round_, **run, "eviction": eviction})
                print(f"{label} {cache} nice {nice} #{round_}: {run['cold_start_s']:.2f} s, app CPU "
                      f"{run['app_cpu_s']:.2f} s, load {run['load_average'][0]:.1f}", file=sys.stderr)
    return runs


def summarize_runs(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per checkout and page-cache state: median, min and max of each measure."""
    rows = []
    for key in dict.fromkeys((r["checkout"], r["cache"], r["nice"]) for r in runs):
        mine = [r for r in runs if (r["checkout"], r["cache"], r["nice"]) == key]
        row: dict[str, Any] = {"checkout": key[0], "cache": key[1], "nice": key[2], "runs": len(mine)}
        for measure in ("cold_start_s", "app_cpu_s", "server_up_s", "connected_s", "models_ready_s"):
            values = [r[measure] for r in mine if r.get(measure) is not None]
            row[measure] = ({"median": float(np.median(values)), "min": min(values), "max": max(values)}
                            if values else None)
        row["met"] = row["cold_start_s"]["median"] <= TARGET_S
        rows.append(row)
    return rows


def run_cold_start_benchmark(config: ColdStartConfig, *, command: str | None = None) -> dict[str, Any]:
    """Warm-up and import profile per checkout, then the timed runs; JSON-ready results."""
    from benchmarks.measure import collect_environment

    logging.getLogger("httpx").setLevel(logging.WARNING)   # the client's request lines
    checkouts = parse_checkouts(config.checkouts)
    python, image = space_python(), Path(config.image)
    release = _release(config)
    environment = collect_environment()
    profiles = {}
    for label, checkout in checkouts.items():   # the first run also compiles the checkout's .pyc files
        first_verdict_run(python, release, image, Path(config.workdir) / "runs" / f"{label}-warm-up",
                          checkout=checkout)
        profiles[label] = import_profile(python, release, image, Path(config.workdir), checkout=checkout)
    runs = _timed_runs(python, release, image, checkouts, config)
    return {"command": command, "target_s": TARGET_S, "environment": environment, "client_nice": os.nice(0),
            "load_average_end": list(os.getloadavg()),
            "venv": "pip install -r requirements.txt only (.cache/space-venv)",
            "release": describe_release(release, trained_here=not config.release),
            "image": Path(config.image).name, "checkouts": {k: str(v) for k, v in checkouts.items()},
            "import_profiles": profiles, "runs": runs, "summary": summarize_runs(runs)}


# --------------------------------------------------------------------------- the Markdown

def _spread(stat: Mapping[str, float] | None) -> str:
    if not stat:
        return "–"
    return f"{stat['median']:.2f} ({stat['min']:.2f}–{stat['max']:.2f})"


def _profile_rows(profiles: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for label, profile in profiles.items():
        for stage in profile["stages"]:
            rows.append([label, stage["stage"], str(stage["modules"]), f"{stage['cpu_s']:.2f}",
                         ", ".join(stage["heavy"]) or "none"])
    return rows


def render_cold_start(results: Mapping[str, Any], *, command: str | None = None) -> str:
    from fakeface.utils.formatting import markdown_table

    env, release = results["environment"], results["release"]
    load = lambda values: ", ".join(f"{v:.2f}" for v in values)   # noqa: E731 - one-line formatter
    summary = [[r["checkout"], r["cache"], str(r["nice"]), str(r["runs"]), _spread(r["cold_start_s"]),
                _spread(r["app_cpu_s"]),
                _spread(r["server_up_s"]), _spread(r["models_ready_s"]), _spread(r["connected_s"]),
                "yes" if r["met"] else "no"] for r in results["summary"]]
    runs = [[r["checkout"], r["cache"], str(r["nice"]), str(r["round"]), f"{r['cold_start_s']:.2f}",
             "–" if r["app_cpu_s"] is None else f"{r['app_cpu_s']:.2f}", f"{r['load_average'][0]:.2f}",
             f"{r['verdict']} ({r['mode']}, {r['faces']} faces)"] for r in results["runs"]]
    imports = [[label, f"{p['importtime']['total_ms']:.0f}",
                ", ".join(f"{k} {v:.0f}" for k, v in list(p["importtime"]["top_ms"].items())[:8])]
               for label, p in results["import_profiles"].items()]
    lines = [
        "# Cold start: `python app.py` to the first verdict", "",
        f"Command: `{command or results.get('command') or 'python scripts/cold_start_benchmark.py'}`.",
        f"Venv: {results['venv']}. Release: {release['architecture']} at {release['input_size']}, face crop "
        f"{'on' if release['face_crop'] else 'off'}, int8 fast path "
        f"{'shipped' if release['int8_fast_path'] else 'absent'}"
        f" ({release['trained_by']}). Image: `{results['image']}` (a group photo: the face stage runs).",
        f"CPU: {env['cpu']}, flags {', '.join(env['cpu_flags'])}; {env['cpus_available']} CPUs. Load average "
        f"{load(env['load_average'])} at the start, {load(results['load_average_end'])} at the end; the client "
        f"(this script) ran at nice {results.get('client_nice', 0)}.", "",
        f"**Target**: <= {results['target_s']:.0f} s from process start to the first `/verdict` answered. Seconds, "
        "median (min–max); app CPU is the app process's user+system time (all threads) up to the answer:", "",
        markdown_table(["checkout", "page cache", "nice", "runs", "cold start s", "app CPU s", "server up s",
                        "models ready s", "client connected s", "met"], summary), "",
        "Server up: the app printed its URL; models ready: the background loader finished (the app's log lines, "
        "timed as they arrived); client connected: `gradio_client.Client` (polling every 0.2 s) got the app's "
        "config. Nice: the app's priority; at -10 the machine's other jobs (nice 0 and above) yield it most of the CPU, "
        "much as an idle machine would; at 0 it shares the cores with them. Warm: the previous run left the files in the "
        "page cache. Cold: the venv, the interpreter's "
        "library, the checkout and the release were evicted first (`posix_fadvise(DONTNEED)` per file).", "",
        "## What the first verdict imports", "",
        "One process without a server: `import app` (the page built), the models loaded, one verdict. Modules "
        "loaded, process CPU seconds so far, and which of the packages the first verdict does not need are "
        f"loaded ({', '.join(HEAVY_MODULES)}):", "",
        markdown_table(["checkout", "after", "modules", "CPU s", "heavy packages loaded"],
                       _profile_rows(results["import_profiles"])), "",
        "`python -X importtime -c \"import app\"`, self time summed by package (ms; importtime's own overhead "
        "inflates these):", "",
        markdown_table(["checkout", "total ms", "largest"], imports), "",
        "## Every run", "",
        markdown_table(["checkout", "page cache", "nice", "round", "cold start s", "app CPU s", "load (1 min)",
                        "verdict"], runs),
    ]
    return "\n".join(lines) + "\n"
