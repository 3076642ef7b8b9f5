"""The panel benchmark's cached inputs: every image's face crop (the app's face stage, shared with the
generalisation benchmark), each real's trace window and its twins, and each image's format facts.

A real's **window** is the centre of its face crop, at most ``window`` px square, written in the original's
container: a JPEG original gives a JPEG window with the original's own quantisation tables, so the twin made from
it (:func:`fakeface.data.twins.make_twin` saves a twin like its real) is compressed exactly as its real is and
JPEG history never tells a pair apart.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from benchmarks.pack import ImageItem

logger = logging.getLogger(__name__)

__all__ = ["format_facts", "real_windows", "window_twins"]

_VERSION = 1


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def real_windows(items: Sequence[ImageItem], crops: Sequence[str], data_dir: str, cache_dir: str,
                 window: int) -> dict[int, str]:
    """Real index -> its window file (cached)."""
    folder = Path(cache_dir) / "windows"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, item in enumerate(items):
        if item.label:
            continue
        raw = Image.open(Path(data_dir) / item.file)
        jpeg = raw.format == "JPEG" and bool(getattr(raw, "quantization", None))
        path = folder / f"{_key(_VERSION, item.file, window)}.{'jpg' if jpeg else 'png'}"
        if not path.is_file():
            with Image.open(crops[i]) as crop:
                crop = crop.convert("RGB")
            side = min(window, *crop.size)
            x, y = (crop.width - side) // 2, (crop.height - side) // 2
            region = crop.crop((x, y, x + side, y + side))
            buffer = io.BytesIO()
            if jpeg:   # the original's tables: a window (and so its twin) compressed as the real photo was
                region.save(buffer, format="JPEG", qtables=raw.quantization, subsampling=_subsampling(raw))
            else:
                region.save(buffer, format="PNG", compress_level=1)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buffer.getvalue())
            tmp.replace(path)
        out[i] = str(path)
    return out


def _subsampling(raw: Image.Image) -> int:
    from PIL import JpegImagePlugin

    try:
        return int(JpegImagePlugin.get_sampling(raw))
    except Exception:  # noqa: BLE001 - unknown layouts: Pillow's default
        return -1


def window_twins(windows: dict[int, str], items: Sequence[ImageItem], makers: Sequence[str], twin_cache: str,
                 *, threads: int = 1) -> tuple[dict[int, list[str]], dict[str, Any]]:
    """Real index -> its twins' files, one per maker (cached by (window sha256, maker, version))."""
    from fakeface.data.twins import TwinMakerUnavailable, create_twin_maker, make_twin

    out: dict[int, list[str]] = {i: [] for i in windows}
    facts: dict[str, Any] = {}
    for name in makers:
        try:
            maker = create_twin_maker(name, threads=threads)
        except TwinMakerUnavailable as error:
            logger.warning("twin maker %s unavailable (%s): left out", name, error)
            facts[name] = {"available": False, "reason": str(error)}
            continue
        seconds, psnr, made = [], [], 0
        for n, (i, path) in enumerate(sorted(windows.items())):
            start = time.perf_counter()
            twin = make_twin(path, maker, twin_cache, source_id=items[i].group)
            if not twin.cached:
                seconds.append(time.perf_counter() - start)
                made += 1
            psnr.append(twin.psnr_db)
            out[i].append(twin.path)
            if n % 100 == 0:
                logger.info("twins %s: %d/%d (%d made)", name, n, len(windows), made)
        facts[name] = {"available": True, "version": maker.version, "made_now": made,
                       "psnr_median": float(np.median(psnr)) if psnr else None,
                       "s_per_twin_median": float(np.median(seconds)) if seconds else None}
    return out, facts


def format_facts(items: Sequence[ImageItem], data_dir: str) -> list[dict[str, Any]]:
    """Container, size and JPEG quality of each original (headers only), for format-matched subsets."""
    from fakeface.data.images import estimate_jpeg_quality

    facts = []
    for item in items:
        with Image.open(Path(data_dir) / item.file) as raw:
            quality = estimate_jpeg_quality(getattr(raw, "quantization", None)) if raw.format == "JPEG" else None
            facts.append({"format": raw.format, "width": raw.width, "height": raw.height, "jpeg_quality": quality})
    return facts
