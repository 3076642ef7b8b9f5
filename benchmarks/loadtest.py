"""Load test of the launched app: many clients, verdicts and full analyses, memory watched.

The server runs in its own process (:func:`start_server`), so its resident
memory is the app's alone; clients run as threads here, speaking the browser's
protocol (:class:`benchmarks.loadtest_clients.BrowserClient`, about 3 ms of CPU a
request) unless ``client_kind="gradio_client"``. Four phases on the same server,
each with the same clients:

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
``tests/test_load.py`` (a short one); the clients, the memory watch and each phase's figures are in
:mod:`benchmarks.loadtest_clients`, the report's Markdown in :mod:`benchmarks.loadtest_report`.
"""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.loadtest_clients import (
    DETECT_MIX, NOOP_API, NOOP_UPLOAD_API, VERDICT_API, MemoryWatch, PhaseResult, detect_caller, noop_call,
    noop_upload_caller, run_phase, verdict_caller,
)

logger = logging.getLogger(__name__)

__all__ = [
    "NOOP_UPLOAD_API", "LoadReport", "MemoryWatch", "PhaseResult", "add_noop_endpoint", "build_load_images",
    "describe_machine",
    "describe_queue", "free_port", "launch_local_app", "run_load_test", "run_phase",
    "save_load_model", "start_server", "stop_server", "verdict_caller", "wait_until_ready",
]

# Issue 14: with 8 concurrent users, verdict-only requests at >= 80 % of the
# no-op endpoint's requests per second on the same server.
VERDICT_VS_NOOP_TARGET = 0.80
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
    client_kind: str = "browser"          # CLIENT_KINDS: what drove the app
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
        return {"clients": self.clients, "client_kind": self.client_kind, "requests_per_client": self.requests_per_client,
                "server": self.server,
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
                seed: int, noop: bool, say: Callable[[str], None], client_kind: str) -> tuple[list[PhaseResult], list[str]]:
    # Warm up at full concurrency: each worker thread's allocator arena and torch
    # buffers appear on first use, which is not growth.
    warm = max(len(DETECT_MIX) + 1, requests_per_client // 10)
    say(f"warm-up: {clients} clients x {warm} requests; RSS {watch.rss_mb():.0f} MiB")
    run_phase(url, "warmup", clients=clients, requests_per_client=warm,
              call=detect_caller(images, every_kind_first=True), seed=seed + 99, client_kind=client_kind)
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
                                seed=seed, watch=watch, client_kind=client_kind))
    return phases, notes


def run_load_test(*, clients: int = 8, requests_per_client: int = 200, model_dir: str | os.PathLike | None = None,
                  workdir: str | os.PathLike | None = None, seed: int = 0, noop: bool = True, client_kind: str = "browser",
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
                                        seed=seed, noop=noop, say=say, client_kind=client_kind)
            server["alive_after"] = process.poll() is None
    finally:
        stop_server(process)
    machine = {**machine_before, "load_average_after": describe_machine()["load_average"]}
    return LoadReport(clients, requests_per_client, server, machine, phases, notes=notes, client_kind=client_kind)


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

