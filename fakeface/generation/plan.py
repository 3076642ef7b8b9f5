"""What a batch run should produce: a deterministic plan of images, and its description.

Every planned image has an id that is a pure function of what it asks for, so
the same command re-run (or extended) skips what is done instead of paying again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakeface.utils.constants import DEFAULT_IMAGE_MODEL
from fakeface.generation.client import DEFAULT_QUALITY, DEFAULT_SIZE, check_quality, check_size, resolve_image_model
from fakeface.generation.prompts import build_face_prompt, build_lookalike_prompt, plan_balanced_attributes

__all__ = ["PlannedImage", "describe_plan", "list_real_images", "plan_generation"]

_REAL_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}


@dataclass(frozen=True)
class PlannedImage:
    """One image a run should end up with; ``id`` is a pure function of what it asks for."""

    id: str
    index: int
    mode: str                              # "generate" | "lookalike"
    prompt: str
    model: str
    size: str
    quality: str
    attributes: dict[str, str] = field(default_factory=dict)
    source_id: str | None = None           # the real image's file stem, for look-alikes
    source_path: str | None = None


def _image_id(prefix: str, label: str, spec: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return f"{prefix}-{label}-{digest}"


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "image"


def list_real_images(real_dir: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``real_dir``, sorted by name (FFHQ layout: ``00000.png`` ...)."""
    folder = Path(real_dir)
    if not folder.is_dir():
        raise ValueError(f"--from-real folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _REAL_IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--from-real folder {folder} holds no image files ({', '.join(sorted(_REAL_IMAGE_SUFFIXES))})")
    return files


def plan_generation(
    count: int | None,
    *,
    model: str = DEFAULT_IMAGE_MODEL,
    size: str = DEFAULT_SIZE,
    quality: str = DEFAULT_QUALITY,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    real_dir: str | os.PathLike | None = None,
) -> list[PlannedImage]:
    """The images a run should produce, in order; the same arguments give the same ids.

    - ``real_dir``: look-alikes of the real faces in that folder, in name order
      (``count`` defaults to one per face; more cycle through them again).
    - ``prompts``: free-text prompts, cycled to ``count`` images (no attributes).
    - otherwise: portraits spread evenly over the attribute grid (``seed`` breaks ties).

    The plan for N images is a prefix of the plan for N + M, so a run can be extended.
    Ids depend on what is asked (attributes, free text or source, model, size,
    quality), not on prompt wording, so rewording the template never re-bills images.
    """
    model = resolve_image_model(model)
    size, quality = check_size(size), check_quality(quality)
    base = {"model": model, "size": size, "quality": quality}
    if count is not None and count < 0:
        raise ValueError(f"--count must be >= 0, got {count}")
    plan: list[PlannedImage] = []
    if real_dir is not None:
        reals = list_real_images(real_dir)
        count = len(reals) if count is None else count
        prompt = prompts[0] if prompts else build_lookalike_prompt()
        for i in range(count):
            real, variant = reals[i % len(reals)], i // len(reals)
            source_id = real.stem
            spec = {**base, "mode": "lookalike", "source": source_id, "variant": variant,
                    **({"prompt": prompt} if prompts else {})}
            plan.append(PlannedImage(
                id=_image_id("lookalike", f"{_safe_stem(source_id)}-{variant}", spec), index=i,
                mode="lookalike", prompt=prompt, attributes={}, source_id=source_id,
                source_path=str(real), **base))
        return plan
    if count is None:
        raise ValueError("--count is required (unless --from-real gives one look-alike per real face)")
    if prompts:
        texts = [p.strip() for p in prompts]
        if not all(texts):
            raise ValueError("a --prompt is empty")
        for i in range(count):
            text = texts[i % len(texts)]
            spec = {**base, "mode": "prompt", "index": i, "prompt": text}
            plan.append(PlannedImage(id=_image_id("prompt", f"{i:05d}", spec), index=i, mode="generate",
                                     prompt=text, **base))
        return plan
    for i, attributes in enumerate(plan_balanced_attributes(count, seed=seed)):
        spec = {**base, "mode": "grid", "index": i, "seed": seed, "attributes": attributes}
        plan.append(PlannedImage(id=_image_id("face", f"{i:05d}", spec), index=i, mode="generate",
                                 prompt=build_face_prompt(attributes), attributes=attributes, **base))
    return plan


def describe_plan(plan: Sequence[PlannedImage], *, done_ids: frozenset[str] | set[str] = frozenset(),
                  max_images: int | None = None) -> str:
    """A human-readable plan: counts per attribute value and per demographic cell, models, sizes."""
    todo = [p for p in plan if p.id not in done_ids]
    to_call = todo if max_images is None else todo[:max_images]
    lines = [
        f"planned images: {len(plan)} ({sum(p.mode == 'lookalike' for p in plan)} look-alikes)",
        f"already done:   {len(plan) - len(todo)}",
        f"to generate now: {len(to_call)}" + (f" (capped by --max-images {max_images})" if max_images is not None else ""),
        "models: " + ", ".join(f"{m} x{n}" for m, n in Counter(p.model for p in plan).items()),
        "sizes: " + ", ".join(f"{s} x{n}" for s, n in Counter(p.size for p in plan).items()),
        "qualities: " + ", ".join(f"{q} x{n}" for q, n in Counter(p.quality for p in plan).items()),
    ]
    keys = list(dict.fromkeys(k for p in plan for k in p.attributes))
    for key in keys:
        counts = Counter(p.attributes.get(key) for p in plan)
        lines.append(f"  {key}: " + ", ".join(f"{v}={n}" for v, n in sorted(counts.items(), key=lambda kv: str(kv[0]))))
    cell_keys = [k for k in ("age", "gender", "race") if k in keys]
    if cell_keys:
        cells = Counter(tuple(p.attributes.get(k) for k in cell_keys) for p in plan)
        lines.append(f"  cells ({' x '.join(cell_keys)}): {len(cells)} used, "
                     f"{min(cells.values())}-{max(cells.values())} images each")
    sources = {p.source_id for p in plan if p.source_id}
    if sources:
        lines.append(f"  real faces used as sources: {len(sources)}")
    return "\n".join(lines)
