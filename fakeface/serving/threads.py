"""The launched app's thread budget: concurrent model calls must not oversubscribe the cores.

The server runs model calls in several lanes at once: the CPU lane
(``/detect``, batches, dataset evaluation; two at a time) and the verdict
batcher's worker (:mod:`fakeface.serving.verdicts`), next to the web server,
uploads and decoding. PyTorch's intra-op threads are OpenMP threads that
spin while they wait for work, so on the Space's 2 cores two-thread torch
calls burned their waits as CPU: in the load test the server spent 133-162 ms
of CPU per verdict with torch's default 2 threads and 47 ms with 1
(docs/performance.md). So the launched app gives each torch call
``cores // concurrent calls`` threads (at least 1): 1 on 2 cores.

ONNX Runtime is left as it is: its sessions are made with spinning off
(:func:`fakeface.modeling.fastpath.create_session`,
:func:`fakeface.faces.create_face_session`), so an idle worker yields its
core; 1 or 2 threads per session measured the same CPU per verdict under 8
users, and 2 keep a lone request fast. ``FAKEFACE_THREADS``, when set, is
used as it is for both.
"""
from __future__ import annotations

import logging
import os
import sys

from fakeface.utils.settings import Settings, default_threads

logger = logging.getLogger(__name__)

__all__ = ["apply_serving_threads", "serving_torch_threads"]


def serving_torch_threads(settings: Settings, concurrent_calls: int) -> int:
    """Threads for each torch call when ``concurrent_calls`` model calls may run at once.

    ``FAKEFACE_THREADS`` when set; else the cores (:func:`default_threads`) shared out, at least 1.
    """
    if concurrent_calls < 1:
        raise ValueError(f"concurrent_calls must be >= 1, got {concurrent_calls}")
    if settings.threads is not None:
        return settings.threads
    return max(1, default_threads() // concurrent_calls)


def apply_serving_threads(settings: Settings, concurrent_calls: int) -> int:
    """Set torch's intra-op threads for this process (:func:`serving_torch_threads`); returns the count.

    Torch not imported yet (a release served by its int8 graph imports it for Grad-CAM only):
    ``OMP_NUM_THREADS`` is set instead, which torch reads when it is first imported.
    """
    threads = serving_torch_threads(settings, concurrent_calls)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    logger.info("torch intra-op threads per model call: %d (%d calls at once)", threads, concurrent_calls)
    return threads
