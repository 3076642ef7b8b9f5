"""Verdict-only requests that arrive together share one model call.

A verdict is a few milliseconds of model time; under many users most of a
request is overhead and waiting. :class:`VerdictBatcher` gathers the images of
concurrent requests for at most ``max_wait_ms`` (or until ``max_batch_size``
are waiting) and scores them with :func:`score_images`, one call per model,
exactly as a single request would be scored. The evidence (Grad-CAM,
robustness re-check, provenance) stays on demand in :func:`analyze_bytes`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from PIL import Image

from fakeface.serving.analysis import ImageVerdict, decode_upload, display_name, score_images
from fakeface.serving.models import LoadedModel
from fakeface.utils.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["VerdictBatcher", "verdict_bytes"]


class VerdictBatcher:
    """A queue and one worker thread: images in, :class:`ImageVerdict` out, scored in shared batches.

    ``models`` is called by the worker for every batch (e.g. a registry's
    ``require_models``), so an :class:`~fakeface.serving.errors.AppError` for
    missing models reaches every waiting caller. ``batch_sizes`` counts the
    batches scored, by size (how much sharing happened).
    """

    def __init__(self, models: Callable[[], Sequence[LoadedModel]], *, max_batch_size: int = 8,
                 max_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._models = models
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_ms) / 1e3
        self._queue: queue.SimpleQueue[tuple[Image.Image, Future]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batch_sizes: dict[int, int] = {}

    @classmethod
    def from_settings(cls, models: Callable[[], Sequence[LoadedModel]], settings: Settings) -> "VerdictBatcher":
        return cls(models, max_batch_size=settings.verdict_batch_size, max_wait_ms=settings.verdict_wait_ms)

    def submit(self, image: Image.Image) -> Future:
        """Queue one decoded image; the future resolves to its :class:`ImageVerdict` (or the scoring error)."""
        future: Future = Future()
        self._start()
        self._queue.put((image, future))
        return future

    def verdict(self, image: Image.Image) -> ImageVerdict:
        """Block until ``image`` is scored (with whatever other requests arrived with it)."""
        return self.submit(image).result()

    def _start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="fakeface-verdict-batcher", daemon=True)
                self._worker.start()

    def _gather(self) -> list[tuple[Image.Image, Future]]:
        batch = [self._queue.get()]                      # blocks until there is work
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._gather()
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            try:
                verdicts = score_images(self._models(), [image for image, _ in batch])
            except BaseException as error:  # noqa: BLE001 - every waiting caller gets the error, the worker lives on
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), verdict in zip(batch, verdicts):
                future.set_result(verdict)


def verdict_bytes(data: bytes, filename: str | None, batcher: VerdictBatcher) -> dict[str, Any]:
    """One file's verdict, no evidence: decoded here, scored in a shared batch; JSON-ready."""
    started = time.perf_counter()
    decoded = decode_upload(data)
    verdict = batcher.verdict(decoded.image)
    return {"file": display_name(filename), **verdict.to_dict(),
            "timings_ms": {"total_ms": round((time.perf_counter() - started) * 1e3, 1)}}
