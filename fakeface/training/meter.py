"""Training throughput bookkeeping, kept out of the loop: images per second and time blocked on the loader.

Windows (reset at every log) and whole-run totals both exclude checkpoint
saves (:meth:`ThroughputMeter.paused`); totals also exclude validation.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class ThroughputMeter:
    """Counts images across ``num_processes`` and the seconds spent training and waiting for batches."""

    def __init__(self, num_processes: int):
        self.num_processes = num_processes
        self.images, self.seconds, self.wait = 0, 0.0, 0.0        # whole run (this invocation)
        self._reset_window()
        self._epoch_start = self._fetch_start = time.perf_counter()
        self._paused = 0.0

    def _reset_window(self) -> None:
        self._window_images, self._window_wait = 0, 0.0
        self._window_start = time.perf_counter()

    def start_epoch(self) -> None:
        self._reset_window()
        self._epoch_start = self._fetch_start = self._window_start
        self._paused = 0.0

    def batch_arrived(self) -> None:
        """Call when the loader hands over a batch: the time since :meth:`fetching` was spent waiting."""
        waited = time.perf_counter() - self._fetch_start
        self._window_wait += waited
        self.wait += waited

    def batch_done(self, local_images: int) -> None:
        n = local_images * self.num_processes
        self._window_images += n
        self.images += n

    def fetching(self) -> None:
        """Call before asking the loader for the next batch."""
        self._fetch_start = time.perf_counter()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside (a checkpoint save) counts neither for the window nor the epoch."""
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self._paused += spent
            self._window_start += spent

    def take_window(self) -> dict[str, float]:
        """Images per second and loader-wait fraction since the last call; starts a new window."""
        elapsed = time.perf_counter() - self._window_start
        stats = {
            "images_per_second": self._window_images / elapsed if elapsed > 0 else float("nan"),
            "loader_wait_fraction": self._window_wait / elapsed if elapsed > 0 else float("nan"),
        }
        self._reset_window()
        return stats

    def end_epoch(self) -> None:
        self.seconds += time.perf_counter() - self._epoch_start - self._paused

    def summary(self) -> dict[str, float]:
        return {
            "images_per_second": self.images / self.seconds if self.seconds > 0 else float("nan"),
            "loader_wait_fraction": self.wait / self.seconds if self.seconds > 0 else float("nan"),
            "images": self.images, "seconds": self.seconds, "num_processes": self.num_processes,
        }
