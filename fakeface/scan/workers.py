"""How one scan process uses its share of the CPU: threads pinned before torch loads, reading ahead of scoring.

Torch-free on purpose: :mod:`fakeface.scan.cli` calls :func:`pin_threads`
before anything imports torch, because OpenMP and MKL size their thread
pools from the environment when they load.
"""
from __future__ import annotations

import os
import queue
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from fakeface.utils.settings import ENV

__all__ = ["THREAD_VARIABLES", "available_cores", "local_processes", "pin_threads", "prefetch", "threads_per_process",
           "threads_variable"]

# Read once, when each runtime loads: OpenMP (torch's intra-op pool), MKL, OpenBLAS (numpy).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# ONNX Runtime sessions built without a thread count read this one (fakeface.modeling.fastpath.create_session):
# a panel release's experts.
FAKEFACE_THREADS = ENV["threads"]

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_processes() -> int:
    """Scan processes on this machine: ``LOCAL_WORLD_SIZE`` (set by torchrun and accelerate launch), else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def threads_per_process(requested: int | None = None) -> int:
    """``requested``, else this machine's cores shared out evenly between its scan processes (at least 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return int(requested)
    return max(1, available_cores() // local_processes())


def pin_threads(threads: int) -> None:
    """Every thread-count variable set to ``threads`` for this process (and what it starts).

    Call before torch is imported; torch and ONNX Runtime are also told
    directly when the model loads (:func:`fakeface.scan.runner.load_scan_model`).
    """
    for name in (*THREAD_VARIABLES, FAKEFACE_THREADS):
        os.environ[name] = str(threads)


@contextmanager
def threads_variable(threads: int) -> Iterator[None]:
    """``FAKEFACE_THREADS`` set to ``threads`` inside the block, restored after it (sessions read it when built)."""
    before = os.environ.get(FAKEFACE_THREADS)
    os.environ[FAKEFACE_THREADS] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FAKEFACE_THREADS, None)
        else:
            os.environ[FAKEFACE_THREADS] = before


_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterable[T], prepare: Callable[[T], R], depth: int) -> Iterator[R]:
    """``prepare(item)`` for each item, in order, computed by a background thread at most ``depth`` ahead.

    The thread reads and decodes while the caller scores (file reads and
    Pillow's decoders release the GIL). An exception in ``items`` or
    ``prepare`` is raised here, where it would have been raised without the
    thread; a caller that stops early stops the thread. ``depth`` 0: no
    thread, ``prepare`` runs inline.
    """
    if depth < 1:
        yield from (prepare(item) for item in items)
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(prepare(item)):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failed(error))

    thread = threading.Thread(target=work, name="scan-prefetch", daemon=True)
    thread.start()
    try:
        while (value := ready.get()) is not _DONE:
            if isinstance(value, _Failed):
                raise value.error
            yield value
    finally:
        stop.set()
        thread.join()
