"""The load test's clients and what they measure: client threads driving one phase, each kind of request, the
server's resident memory and both sides' CPU time. The server and the whole run are in :mod:`benchmarks.loadtest`.

Two kinds of client drive the same calls. :class:`BrowserClient` (the default) sends what a visitor's browser
sends: the photo to ``/gradio_api/upload``, the call to ``/gradio_api/queue/join``, the answer read from the
session's event stream; it costs about 3 ms of CPU per request. ``gradio_client`` (``--client gradio_client``)
does the same through its own machinery at 60-105 ms per request, on the cores the server needs: with it the
load test measured mostly the clients."""
from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

NOOP_API = "noop"
NOOP_UPLOAD_API = "noop_upload"
VERDICT_API = "verdict"
# (api_name, args builder, weight): the detect mix. ``explain``/``robustness``
# switch Grad-CAM and the two re-scored copies on or off, the three costs a
# visitor can choose; a batch of two files exercises the batch endpoint.
DETECT_MIX = (("fast", 0.5), ("full", 0.25), ("explain", 0.15), ("batch", 0.10))


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

class AppAnswerError(RuntimeError):
    """The app answered a call with an error (``success: false`` on its event stream)."""

    def __init__(self, api_name: str, event_id: str, output: Any):
        super().__init__(f"/{api_name} answered with an error: {str(output)[:300]}")
        self.api_name, self.event_id, self.output = api_name, event_id, output


class BrowserClient:
    """The Gradio queue protocol (``sse_v3``) as a browser speaks it, over one ``httpx`` connection.

    ``predict(*args, api_name=...)`` takes and returns what ``gradio_client.Client.predict`` does (files as
    ``handle_file`` dicts, one output or a tuple, ``gr.State`` left out), so every caller here drives either.
    """

    def __init__(self, url: str, *, timeout_s: float = 300.0):
        import httpx

        self.url = url if url.endswith("/") else url + "/"
        self.session_hash = uuid.uuid4().hex[:11]
        self._http = httpx.Client(timeout=timeout_s)
        config = self._http.get(self.url + "config")
        config.raise_for_status()
        config = config.json()
        self._prefix = self.url + config.get("api_prefix", "/gradio_api").strip("/") + "/"
        types = {c["id"]: c.get("type") for c in config["components"]}
        self._endpoints = {d["api_name"]: (d["id"], [types[i] for i in d["inputs"]], [types[i] for i in d["outputs"]])
                           for d in config["dependencies"] if d.get("api_name")}

    def predict(self, *args: Any, api_name: str) -> Any:
        fn_index, inputs, outputs = self._endpoints[api_name.lstrip("/")]
        given = iter(args)
        data = [None if kind == "state" else self._upload(next(given)) for kind in inputs]
        joined = self._http.post(self._prefix + "queue/join", json={
            "data": data, "fn_index": fn_index, "session_hash": self.session_hash, "event_data": None,
            "trigger_id": None})
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        answer = self._await(api_name.lstrip("/"), event_id)
        shown = [value for value, kind in zip(answer, outputs) if kind != "state"]
        return shown[0] if len(shown) == 1 else tuple(shown)

    def _await(self, api_name: str, event_id: str) -> list:
        """The session's event stream, read until this call's ``process_completed``."""
        with self._http.stream("GET", self._prefix + "queue/data", params={"session_hash": self.session_hash}) as stream:
            stream.raise_for_status()
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                    if not message.get("success"):
                        raise AppAnswerError(api_name, event_id, message.get("output"))
                    return message["output"]["data"]
        raise RuntimeError(f"the event stream ended without the answer to {event_id}")

    def _upload(self, value: Any) -> Any:
        """A ``handle_file`` dict (or a list of them) sent as the browser does: uploaded, then named by path."""
        if isinstance(value, list):
            return [self._upload(v) for v in value]
        if not (isinstance(value, dict) and value.get("meta", {}).get("_type") == "gradio.FileData"):
            return value
        path = Path(value["path"])
        sent = self._http.post(self._prefix + "upload", files={"files": (path.name, path.read_bytes())})
        sent.raise_for_status()
        return {"path": sent.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def close(self) -> None:
        self._http.close()


def make_client(kind: str, url: str) -> Any:
    """A client of ``kind`` (:data:`CLIENT_KINDS`) for the app at ``url``."""
    if kind == "browser":
        return BrowserClient(url)
    if kind == "gradio_client":
        from gradio_client import Client

        return Client(url, verbose=False, download_files=False)
    raise ValueError(f"unknown client kind {kind!r}; one of {', '.join(CLIENT_KINDS)}")


CLIENT_KINDS = ("browser", "gradio_client")


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
              watch: MemoryWatch | None = None, client_kind: str = "browser") -> PhaseResult:
    """``clients`` threads, each with its own client of ``client_kind`` (own session), ``requests_per_client`` calls.

    ``call(client, rng)`` makes one request and returns its kind; any
    exception is an error for the report (the phase goes on).
    """
    result = PhaseResult(name, clients, requests_per_client)
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        try:
            client = make_client(client_kind, url)
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
        if isinstance(client, BrowserClient):
            client.close()

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
