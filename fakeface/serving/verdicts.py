"""Verdict-only requests that arrive together share model calls.

A verdict is a few milliseconds of model time; under many users most of a
request is overhead and waiting. :class:`VerdictBatcher` gathers the images of
concurrent requests for at most ``max_wait_ms`` (or until ``max_batch_size``
are waiting) and scores them with :func:`score_images`, exactly as a single
request would be scored, in model calls of at most :data:`MODEL_CALL_PIXELS`
input pixels: past that, the activations outgrow the CPU's cache and every
crop costs more (the load test's 5-crop 128 px MobileNetV2 on one thread:
22.8 ms of CPU per photo in calls of 2 photos, 29.8 in calls of 3, 36.8 in
calls of 8, the batch the batcher gathers under 8 users).
The evidence (Grad-CAM, robustness re-check, provenance) stays on demand in
:func:`analyze_bytes`.
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

__all__ = ["MODEL_CALL_PIXELS", "VERDICT_WORKERS", "VerdictBatcher", "images_per_call", "verdict_bytes"]

# At most this many model-input pixels per model call: 10 crops of 128², 13 of 112², 3 of 224² (costs in
# the module docstring; a 1-crop 112 px fp32 MobileNetV2: ~4 ms per crop in calls of 8-16, 6-7 in calls of 26).
MODEL_CALL_PIXELS = 10 * 128 * 128
# The batcher's worker threads: model calls it runs at once (the launched app's thread budget counts them).
VERDICT_WORKERS = 1


def images_per_call(models: Sequence[LoadedModel], pixel_budget: int = MODEL_CALL_PIXELS) -> int:
    """How many photos one model call takes: the budget over the costliest model's pixels per photo
    (its crops per image times the crop's area; one face per photo for a face-stage model), at least 1."""
    per_image = max((m.preprocessing.crops_per_image * m.preprocessing.crop_size[0] * m.preprocessing.crop_size[1]
                     for m in models), default=1)
    return max(1, pixel_budget // max(1, per_image))


class VerdictBatcher:
    """A queue and one worker thread: images in, :class:`ImageVerdict` out, scored in shared batches.

    ``models`` is called by the worker for every batch (e.g. a registry's
    ``require_models``), so an :class:`~fakeface.serving.errors.AppError` for
    missing models reaches every waiting caller. ``batch_sizes`` counts the
    batches gathered, by size (how much sharing happened); ``call_sizes`` the
    model calls they were scored in (:func:`images_per_call` photos at most,
    for ``pixel_budget``).
    """

    def __init__(self, models: Callable[[], Sequence[LoadedModel]], *, max_batch_size: int = 8,
                 max_wait_ms: float = 5.0, pixel_budget: int = MODEL_CALL_PIXELS):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._models = models
        self.max_batch_size = max_batch_size
        self.pixel_budget = pixel_budget
        self.max_wait_s = max(0.0, max_wait_ms) / 1e3
        self._queue: queue.SimpleQueue[tuple[Image.Image, Future]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batch_sizes: dict[int, int] = {}
        self.call_sizes: dict[int, int] = {}

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
                models = self._models()
                step = images_per_call(models, self.pixel_budget)
            except BaseException as error:  # noqa: BLE001 - every waiting caller gets the error, the worker lives on
                self._fail(batch, error)
                continue
            for start in range(0, len(batch), step):
                self._score(models, batch[start:start + step])

    def _score(self, models: Sequence[LoadedModel], part: list[tuple[Image.Image, Future]]) -> None:
        self.call_sizes[len(part)] = self.call_sizes.get(len(part), 0) + 1
        try:
            verdicts = score_images(models, [image for image, _ in part])
        except BaseException as error:  # noqa: BLE001 - every caller of this call gets the error
            self._fail(part, error)
            return
        for (_, future), verdict in zip(part, verdicts):
            future.set_result(verdict)

    @staticmethod
    def _fail(part: list[tuple[Image.Image, Future]], error: BaseException) -> None:
        for _, future in part:
            future.set_exception(error)


def verdict_bytes(data: bytes, filename: str | None, batcher: VerdictBatcher) -> dict[str, Any]:
    """One file's verdict, no evidence: decoded here, scored in a shared batch; JSON-ready."""
    started = time.perf_counter()
    decoded = decode_upload(data)
    verdict = batcher.verdict(decoded.image)
    return {"file": display_name(filename), **verdict.to_dict(),
            "timings_ms": {"total_ms": round((time.perf_counter() - started) * 1e3, 1)}}
