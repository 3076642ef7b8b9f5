"""Load test of the launched app: many ``gradio_client`` clients, verdicts and full analyses, memory watched.

The server runs in its own process (:func:`start_server`), so its resident
memory is the app's alone; clients run as threads here. Three phases on the
same server, each with the same clients:

* ``detect``: the full-analysis mix (:data:`DETECT_MIX`), with p50/p95;
* ``verdict``: verdict-only requests (``/verdict``, whose concurrent calls
  share model calls, :mod:`fakeface.serving.verdicts`);
* ``noop``: a no-op endpoint added to the same server (:func:`add_noop_endpoint`),
  the server and client machinery alone: the baseline of the target
  (verdicts at >= 80 % of its requests per second);
* ``noop_upload``: a no-op that takes the photo as ``/verdict`` does (the same
  component, uploaded the same way) and returns "ok": what the transport of
  a photo costs, so the report can tell it from what the verdict itself costs.

Used by ``scripts/load_test.py`` (the full 8 clients x 200 requests run) and
``tests/test_load.py`` (a short one); the report's Markdown is :mod:`benchmarks.loadtest_report`.
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "NOOP_UPLOAD_API", "LoadReport", "MemoryWatch", "PhaseResult", "add_noop_endpoint", "build_load_images",
    "describe_machine",
    "describe_queue", "free_port", "launch_local_app", "run_load_test", "run_phase",
    "save_load_model", "start_server", "stop_server", "verdict_caller", "wait_until_ready",
]

NOOP_API = "noop"
NOOP_UPLOAD_API = "noop_upload"
VERDICT_API = "verdict"
# Issue 14: with 8 concurrent users, verdict-only requests at >= 80 % of the
# no-op endpoint's requests per second on the same server.
VERDICT_VS_NOOP_TARGET = 0.80
# (api_name, args builder, weight): the detect mix. ``explain``/``robustness``
# switch Grad-CAM and the two re-scored copies on or off, the three costs a
# visitor can choose; a batch of two files exercises the batch endpoint.
DETECT_MIX = (("fast", 0.5), ("full", 0.25), ("explain", 0.15), ("batch", 0.10))
# Resident memory may grow by at most this much after warm-up (allocator
# arenas settle, caches fill); more means something accumulates per request.
RSS_GROWTH_BOUND_MB = 64.0


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- server

def add_noop_endpoint(demo: Any) -> Any:
    """Add ``/noop`` (returns "ok" at once) to ``demo`` unless it has one, through the same queue.

    It has no concurrency limit: it measures the server and client machinery, nothing else.
    """
    import gradio as gr

    from fakeface.app.components import OriginalImage

    names = {getattr(fn, "api_name", None) for fn in getattr(demo, "fns", {}).values()}
    if NOOP_API in names:
        return demo
    with demo:
        box = gr.Textbox(visible=False)
        trigger = gr.Button(visible=False)
        trigger.click(lambda: "ok", None, box, api_name=NOOP_API, concurrency_limit=None)
        # The verdict's own input component: the upload and Gradio's handling of it, then nothing.
        photo = OriginalImage(type="filepath", visible=False)
        upload_trigger = gr.Button(visible=False)
        upload_trigger.click(lambda path: "ok" if path else "no file", photo, box, api_name=NOOP_UPLOAD_API,
                             concurrency_limit=None)
    return demo


def launch_local_app(demo: Any, **overrides: Any) -> str:
    """Launch ``demo`` in this process on a free loopback port (no thread lock); returns its URL."""
    from fakeface.app.layout import launch_app

    settings = {"server_name": "127.0.0.1", "server_port": free_port(), "prevent_thread_lock": True,
                "quiet": True, **overrides}
    launch_app(demo, **settings)
    return f"http://127.0.0.1:{settings['server_port']}/"


def describe_queue(demo: Any) -> dict[str, Any]:
    """The queue's configuration: maximum size, default concurrency, and each public endpoint's limit."""
    queue = getattr(demo, "_queue", None)
    default = getattr(queue, "default_concurrency_limit", None)
    endpoints = {}
    for fn in demo.fns.values():
        if fn.api_name and getattr(fn, "api_visibility", "public") == "public":
            limit = fn.concurrency_limit
            endpoints[fn.api_name] = {
                "concurrency_limit": default if limit == "default" else limit,
                "concurrency_id": fn.concurrency_id if isinstance(fn.concurrency_id, str) and not
                fn.concurrency_id.isdigit() else fn.api_name,
                "queued": bool(fn.queue),
            }
    return {"max_size": getattr(queue, "max_size", None), "default_concurrency_limit": default,
            "endpoints": endpoints}


def serve(port: int, info_path: str | None = None) -> None:
    """Build the app from the environment (``FAKEFACE_MODEL``...), add ``/noop`` and serve until killed.

    With ``info_path``, the queue configuration is written there as JSON first.
    """
    from fakeface.app.layout import build_app, launch_app

    demo = add_noop_endpoint(build_app())
    if info_path:
        Path(info_path).write_text(json.dumps(describe_queue(demo)))
    launch_app(demo, server_name="127.0.0.1", server_port=port, quiet=True)


def start_server(model_dir: str | os.PathLike, *, port: int | None = None, env: dict[str, str] | None = None,
                 log_path: str | os.PathLike | None = None) -> tuple[subprocess.Popen, str]:
    """Start the app in a child process serving ``model_dir``; returns (process, url) once it answers."""
    port = port or free_port()
    # MALLOC_ARENA_MAX: glibc gives each worker thread its own heap arena, which
    # holds on to freed image buffers; two arenas keep RSS flat (also advised for the Space).
    child_env = {"MALLOC_ARENA_MAX": "2", **os.environ, "FAKEFACE_MODEL": str(model_dir), "GRADIO_ANALYTICS_ENABLED": "False",
                 "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    root = Path(__file__).resolve().parent.parent
    info = Path(tempfile.mkdtemp(prefix="fakeface-load-info-")) / "queue.json"
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.loadtest", "--serve", str(port), str(info)],
                               cwd=root, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_ready(url, process=process)
    except Exception:
        stop_server(process)
        raise
    process.fakeface_queue = json.loads(info.read_text()) if info.is_file() else {}
    return process, url


def wait_until_ready(url: str, *, timeout_s: float = 120.0, process: subprocess.Popen | None = None) -> None:
    """Wait until the server answers ``/config`` and its models are loaded (``/status`` lists them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app process exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        raise TimeoutError(f"the app at {url} did not answer within {timeout_s:.0f} s")
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    while time.monotonic() < deadline:
        state = client.predict(api_name="/status")[0]
        if state["models"] or state["failures"]:
            if not state["models"]:
                raise RuntimeError(f"the app has no model: {state['failures']}")
            return
        time.sleep(0.5)
    raise TimeoutError("the app's models did not load in time")


def stop_server(process: subprocess.Popen) -> None:
    """Terminate the app process (then kill it if it lingers)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


# --------------------------------------------------------------------------- inputs

def save_load_model(folder: str | os.PathLike, *, arch: str = "mobilenetv2_100", input_size: int = 128,
                    seed: int = 0) -> Path:
    """A random-weight detector at the demo's input size (speed does not depend on what it learned), with the
    ONNX graph every release from train.py carries: fp32 here, as int8 cannot be proven without labels."""
    import torch

    from fakeface.data.preprocess import Preprocessing
    from fakeface.data.synthetic import generate_synthetic_sample
    from fakeface.data.images import load_image
    from fakeface.modeling.detector import create_detector, load_detector, save_detector
    from fakeface.modeling.fastpath import export_fast_path

    torch.manual_seed(seed)
    model = create_detector(arch, preprocessing=Preprocessing(input_size=(3, input_size, input_size)))
    folder = save_detector(model, folder)
    calibration = [load_image(generate_synthetic_sample(i, seed=seed, size=input_size).data).image for i in range(8)]
    export_fast_path(load_detector(folder), folder, calibration)
    return folder


def build_load_images(folder: str | os.PathLike, *, n: int = 6, seed: int = 0) -> list[Path]:
    """A handful of face-sized files in the formats visitors send (PNG, JPEG, WebP; 256-512 px)."""
    from fakeface.data.synthetic import generate_synthetic_sample
    from fakeface.data.images import load_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    formats = (("PNG", "png", {}), ("JPEG", "jpg", {"quality": 90}), ("WEBP", "webp", {"quality": 90}))
    for i in range(n):
        size = (256, 384, 512)[i % 3]
        image = load_image(generate_synthetic_sample(i, seed=seed, size=size).data).image
        fmt, ext, params = formats[i % len(formats)]
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **params)
        path = folder / f"face-{i}.{ext}"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- memory

class MemoryWatch:
    """Samples the resident memory of process ``pid`` every ``interval_s`` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        import psutil

        self._process = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []       # (seconds since start, RSS MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)
        self._t0 = time.monotonic()

    def rss_mb(self) -> float:
        return self._process.memory_info().rss / 2**20

    def cpu_s(self) -> float:
        """The watched process's CPU seconds so far (user + system, all threads)."""
        times = self._process.cpu_times()
        return times.user + times.system

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self._t0, self.rss_mb()))
            except Exception:  # noqa: BLE001 - the process ended
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- clients

@dataclass
class PhaseResult:
    """One phase of the load test: who called what, how fast, what failed."""

    name: str
    clients: int
    requests_per_client: int
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    calls: dict[str, int] = field(default_factory=dict)
    rss_mb: list[tuple[float, float]] = field(default_factory=list, repr=False)
    server_cpu_s: float | None = None     # the app's process CPU time (user + system) over the phase
    client_cpu_s: float | None = None     # this process's (the clients') CPU time over the phase

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    def latency_summary(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {}
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

        return {"mean": round(statistics.fmean(ordered), 1), "p50": pct(0.5), "p90": pct(0.9), "p95": pct(0.95),
                "p99": pct(0.99), "max": round(ordered[-1], 1)}

    def memory_summary(self, warmup_fraction: float = 0.2) -> dict[str, float]:
        """RSS at the end of warm-up (first ``warmup_fraction`` of the phase), at the end, and the peak."""
        if not self.rss_mb:
            return {}
        end_t = self.rss_mb[-1][0]
        start_t = self.rss_mb[0][0]
        cut = start_t + warmup_fraction * (end_t - start_t)
        warm = [m for t, m in self.rss_mb if t <= cut] or [self.rss_mb[0][1]]
        after = [m for t, m in self.rss_mb if t > cut] or [self.rss_mb[-1][1]]
        tail = after[-max(1, len(after) // 10):]
        return {"start": round(self.rss_mb[0][1], 1), "after_warmup": round(warm[-1], 1),
                "end": round(statistics.fmean(tail), 1), "peak": round(max(m for _, m in self.rss_mb), 1),
                "growth_after_warmup": round(statistics.fmean(tail) - warm[-1], 1)}

    def cpu_per_request(self) -> dict[str, float]:
        """CPU milliseconds per answered request: the server's and the clients' (which share the cores)."""
        if not self.ok or self.server_cpu_s is None or self.client_cpu_s is None:
            return {}
        return {"server": round(1e3 * self.server_cpu_s / self.ok, 1), "clients": round(1e3 * self.client_cpu_s / self.ok, 1)}

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "clients": self.clients, "requests_per_client": self.requests_per_client,
                "ok": self.ok, "errors": len(self.errors), "error_examples": sorted(set(self.errors))[:5],
                "wall_s": round(self.wall_s, 2), "throughput_rps": round(self.throughput_rps, 2),
                "latency_ms": self.latency_summary(), "calls": dict(sorted(self.calls.items())),
                "rss_mb": self.memory_summary(), "cpu_ms_per_request": self.cpu_per_request(),
                "rss_trace_mb": [(round(t, 1), round(m, 1)) for t, m in self.rss_mb[::max(1, len(self.rss_mb) // 60)]]}


def _detect_call(kind: str, images: Sequence[Path], rng: random.Random) -> tuple[tuple, str]:
    from gradio_client import handle_file

    if kind == "batch":
        files = [handle_file(str(p)) for p in rng.sample(list(images), 2)]
        return (files,), "/detect_batch"
    if kind == VERDICT_API:
        return (handle_file(str(rng.choice(images))),), f"/{VERDICT_API}"
    image = handle_file(str(rng.choice(images)))
    explain, robustness = {"fast": (False, False), "full": (True, True), "explain": (True, False)}[kind]
    return (image, explain, robustness), "/detect"


def _check_detect_result(kind: str, result: Any) -> None:
    """A call only counts as ok when it returned a real verdict (not just no exception)."""
    if kind == "batch":
        table = result[0]
        headers = table["headers"]
        verdict, kind_column = headers.index("verdict"), headers.index("row")
        # One "photo" row per file, then one "face N" row per face found (a face too small to judge has no verdict).
        photos = [row for row in table["data"] if row[kind_column] == "photo"]
        bad = [row for row in photos if row[verdict] not in ("real", "fake", "uncertain")]
        if len(photos) != 2 or bad:
            raise AssertionError(f"batch photo rows not scored: {bad or photos}")
        return
    payload = result if kind == VERDICT_API else result[0]
    if payload.get("verdict") not in ("real", "fake", "uncertain"):
        raise AssertionError(f"no verdict in {str(payload)[:200]}")


def run_phase(url: str, name: str, *, clients: int, requests_per_client: int,
              call: Callable[[Any, random.Random], str], seed: int = 0,
              watch: MemoryWatch | None = None) -> PhaseResult:
    """``clients`` threads, each with its own ``gradio_client.Client`` (own session), ``requests_per_client`` calls.

    ``call(client, rng)`` makes one request and returns its kind; any
    exception is an error for the report (the phase goes on).
    """
    from gradio_client import Client

    result = PhaseResult(name, clients, requests_per_client)
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        try:
            client = Client(url, verbose=False, download_files=False)
        except Exception as error:  # noqa: BLE001
            with lock:
                result.errors.append(f"client start: {type(error).__name__}: {error}"[:300])
            start_gate.wait()
            return
        start_gate.wait()
        for _ in range(requests_per_client):
            t = time.perf_counter()
            try:
                kind = call(client, rng)
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    result.errors.append(f"{type(error).__name__}: {error}"[:300])
                continue
            elapsed = (time.perf_counter() - t) * 1e3
            with lock:
                result.ok += 1
                result.latencies_ms.append(elapsed)
                result.calls[kind] = result.calls.get(kind, 0) + 1

    threads = [threading.Thread(target=worker, args=(i,), name=f"load-client-{i}", daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    first_sample = len(watch.samples) if watch else 0
    cpu_before = (watch.cpu_s() if watch else None, _own_cpu_s())
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - started
    if watch is not None:
        result.rss_mb = list(watch.samples[first_sample:])
        result.server_cpu_s = watch.cpu_s() - cpu_before[0]
    result.client_cpu_s = _own_cpu_s() - cpu_before[1]
    return result


def _own_cpu_s() -> float:
    """This process's CPU seconds: the client threads (the memory watch's samples are a rounding error)."""
    times = os.times()
    return times.user + times.system


def detect_caller(images: Sequence[Path], *, every_kind_first: bool = False) -> Callable[[Any, random.Random], str]:
    """One mixed detect request per call (see :data:`DETECT_MIX`).

    ``every_kind_first`` (the warm-up): each client's first calls take every
    kind once, in order, so that no code path is first taken, and its one-off
    allocations first made, while memory is being measured.
    """
    kinds = [k for k, _ in DETECT_MIX]
    weights = [w for _, w in DETECT_MIX]
    first_kinds = [*kinds, VERDICT_API]     # the warm-up also takes the verdict path once
    made: dict[int, int] = {}      # client id -> calls made (each client runs in its own thread)

    def call(client: Any, rng: random.Random) -> str:
        n = made[id(client)] = made.get(id(client), 0) + 1
        kind = first_kinds[n - 1] if every_kind_first and n <= len(first_kinds) else rng.choices(kinds, weights)[0]
        args, api = _detect_call(kind, images, rng)
        _check_detect_result(kind, client.predict(*args, api_name=api))
        return kind

    return call


def verdict_caller(images: Sequence[Path]) -> Callable[[Any, random.Random], str]:
    """One verdict-only request (``/verdict``) per call, on a random image of ``images``."""
    from gradio_client import handle_file

    def call(client: Any, rng: random.Random) -> str:
        payload = client.predict(handle_file(str(rng.choice(images))), api_name=f"/{VERDICT_API}")
        if payload.get("verdict") not in ("real", "fake", "uncertain"):
            raise AssertionError(f"no verdict in {str(payload)[:200]}")
        return VERDICT_API

    return call


def noop_call(client: Any, rng: random.Random) -> str:
    if client.predict(api_name=f"/{NOOP_API}") != "ok":
        raise AssertionError("the no-op endpoint did not answer 'ok'")
    return NOOP_API


def noop_upload_caller(images: Sequence[Path]) -> Callable[[Any, random.Random], str]:
    """One upload no-op per call, on a random image of ``images`` (as :func:`verdict_caller` sends it)."""
    from gradio_client import handle_file

    def call(client: Any, rng: random.Random) -> str:
        if client.predict(handle_file(str(rng.choice(images))), api_name=f"/{NOOP_UPLOAD_API}") != "ok":
            raise AssertionError("the upload no-op did not answer 'ok'")
        return NOOP_UPLOAD_API

    return call


# --------------------------------------------------------------------------- the whole test

@dataclass
class LoadReport:
    """Everything the load test measured, JSON-ready via :meth:`to_dict`."""

    clients: int
    requests_per_client: int
    server: dict[str, Any]
    machine: dict[str, Any]
    phases: list[PhaseResult]
    rss_bound_mb: float = RSS_GROWTH_BOUND_MB
    notes: list[str] = field(default_factory=list)

    def phase(self, name: str) -> PhaseResult:
        return next(p for p in self.phases if p.name == name)

    def has_phase(self, name: str) -> bool:
        return any(p.name == name for p in self.phases)

    def memory_growth_mb(self) -> float:
        """The largest RSS growth after warm-up over the phases that do model work."""
        growths = [p.memory_summary().get("growth_after_warmup", 0.0) for p in self.phases
                   if p.name not in (NOOP_API, NOOP_UPLOAD_API)]
        return max(growths, default=0.0)

    def targets(self) -> dict[str, Any]:
        """The targets judged: verdict throughput vs the no-op's, zero errors, flat memory."""
        out: dict[str, Any] = {
            "zero_errors": {"errors": sum(len(p.errors) for p in self.phases),
                            "met": all(not p.errors for p in self.phases)},
            "flat_memory": {"growth_mb": round(self.memory_growth_mb(), 1), "bound_mb": self.rss_bound_mb,
                            "met": self.memory_growth_mb() <= self.rss_bound_mb},
        }
        if self.has_phase(VERDICT_API) and self.has_phase(NOOP_API) and self.phase(NOOP_API).throughput_rps:
            ratio = self.phase(VERDICT_API).throughput_rps / self.phase(NOOP_API).throughput_rps
            out["verdict_vs_noop"] = {"ratio": round(ratio, 3), "target": VERDICT_VS_NOOP_TARGET,
                                      "met": ratio >= VERDICT_VS_NOOP_TARGET}
        if self.has_phase(VERDICT_API) and self.has_phase(NOOP_UPLOAD_API) and self.phase(NOOP_UPLOAD_API).throughput_rps:
            # Not the target (that is the plain no-op's): the share of the gap the verdict's own work makes.
            out["verdict_vs_noop_upload"] = {"ratio": round(self.phase(VERDICT_API).throughput_rps
                                                            / self.phase(NOOP_UPLOAD_API).throughput_rps, 3)}
        return out

    @property
    def passed(self) -> bool:
        """Every request answered and memory flat (the throughput ratio is judged in :meth:`targets`)."""
        targets = self.targets()
        return targets["zero_errors"]["met"] and targets["flat_memory"]["met"]

    def to_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "requests_per_client": self.requests_per_client, "server": self.server,
                "machine": self.machine, "rss_growth_bound_mb": self.rss_bound_mb, "passed": self.passed,
                "targets": self.targets(), "phases": [p.summary() for p in self.phases], "notes": self.notes}


def _server_settings(url: str, process: subprocess.Popen) -> dict[str, Any]:
    """The upload limit the running server announces (``/config``) and the queue it was built with."""
    with urllib.request.urlopen(url + "config", timeout=10) as response:
        config = json.load(response)
    return {"max_file_size": config.get("max_file_size"), "queue": getattr(process, "fakeface_queue", {})}


def describe_machine() -> dict[str, Any]:
    """CPU model and instruction sets (the int8 kernels differ by them), cores, memory, load average."""
    import platform

    import psutil

    flags, model = [], platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text()
        words = set(text.split())
        flags = sorted(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in words)
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                     model)
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags, "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": sys.version.split()[0],
            "torch_threads": os.environ.get("OMP_NUM_THREADS"), "load_average": [round(v, 2) for v in os.getloadavg()]}


def _describe_model(model_dir: Path) -> dict[str, Any]:
    from fakeface.modeling.detector import read_detector_config

    cfg = read_detector_config(model_dir)
    return {"architecture": cfg.get("architecture"), "input_size": (cfg.get("pretrained_cfg") or {}).get("input_size")}


def _run_phases(url: str, watch: MemoryWatch, images: Sequence[Path], *, clients: int, requests_per_client: int,
                seed: int, noop: bool, say: Callable[[str], None]) -> tuple[list[PhaseResult], list[str]]:
    # Warm up at full concurrency: each worker thread's allocator arena and torch
    # buffers appear on first use, which is not growth.
    warm = max(len(DETECT_MIX) + 1, requests_per_client // 10)
    say(f"warm-up: {clients} clients x {warm} requests; RSS {watch.rss_mb():.0f} MiB")
    run_phase(url, "warmup", clients=clients, requests_per_client=warm,
              call=detect_caller(images, every_kind_first=True), seed=seed + 99)
    notes = [f"warm-up before measuring: {clients} clients x {warm} requests; RSS {watch.rss_mb():.0f} MiB after it"]
    # The full mix right after the warm-up (which took its every path), then verdicts and the no-op back to back,
    # so the ratio compares two phases under the same background load.
    plan = [("detect", detect_caller(images)), (VERDICT_API, verdict_caller(images))]
    if noop:
        plan += [(NOOP_API, noop_call), (NOOP_UPLOAD_API, noop_upload_caller(images))]
    phases = []
    for name, call in plan:
        say(f"{name}: {clients} clients x {requests_per_client} requests")
        phases.append(run_phase(url, name, clients=clients, requests_per_client=requests_per_client, call=call,
                                seed=seed, watch=watch))
    return phases, notes


def run_load_test(*, clients: int = 8, requests_per_client: int = 200, model_dir: str | os.PathLike | None = None,
                  workdir: str | os.PathLike | None = None, seed: int = 0, noop: bool = True,
                  server_log: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None) -> LoadReport:
    """Start the app in a child process; drive it with ``clients`` x ``requests_per_client`` verdict-only calls,
    as many no-op calls and as many full-analysis mix calls, watching its resident memory; return the report.
    """
    say = progress or (lambda message: logger.info("%s", message))
    workdir = Path(workdir or tempfile.mkdtemp(prefix="fakeface-load-"))
    model_dir = Path(model_dir) if model_dir else save_load_model(workdir / "model")
    images = build_load_images(workdir / "images", seed=seed)
    machine_before = describe_machine()
    say(f"starting the app with {model_dir}")
    process, url = start_server(model_dir, log_path=server_log)
    try:
        server = {"url": url, **_server_settings(url, process), "model": _describe_model(model_dir)}
        with MemoryWatch(process.pid) as watch:
            phases, notes = _run_phases(url, watch, images, clients=clients, requests_per_client=requests_per_client,
                                        seed=seed, noop=noop, say=say)
            server["alive_after"] = process.poll() is None
    finally:
        stop_server(process)
    machine = {**machine_before, "load_average_after": describe_machine()["load_average"]}
    return LoadReport(clients, requests_per_client, server, machine, phases, notes=notes)


def _main(argv: Sequence[str]) -> int:
    # The child process of start_server: ``python -m benchmarks.loadtest --serve PORT``.
    if len(argv) in (2, 3) and argv[0] == "--serve":
        logging.basicConfig(level=logging.WARNING)
        serve(int(argv[1]), argv[2] if len(argv) == 3 else None)
        return 0
    print("usage: python -m benchmarks.loadtest --serve PORT (see scripts/load_test.py)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

