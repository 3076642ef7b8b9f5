"""Which example photos the Detect tab offers: the release's own, or the synthetic stand-ins for the demo model.

A model trained on real faces ships a few photos of its test split
(``examples/``, written by :mod:`fakeface.training.examples`, with a README
naming each one's source and the licence); those are shown with that licence.
The synthetic stand-ins packaged with the app are shown only for a model
trained on the synthetic set: they say nothing about a real-faces model.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fakeface.serving.models import LoadedModel

__all__ = ["ExampleSet", "SYNTHETIC_EXAMPLES_DIR", "resolve_examples"]

SYNTHETIC_EXAMPLES_DIR = Path(str(importlib.resources.files("fakeface.app") / "examples"))
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class ExampleSet:
    paths: tuple[Path, ...]
    caption: str            # what they are and under which licence, shown above them


def _images(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)) if folder.is_dir() else ()


def _staged(paths: tuple[Path, ...]) -> tuple[Path, ...]:
    """Copies (original bytes) under the system temp folder, the one place outside the app's own folder that
    Gradio serves files from: a Hub release lives in the Hugging Face cache."""
    staged = []
    for path in paths:
        data = path.read_bytes()
        target = Path(tempfile.gettempdir()) / "fakeface-examples" / hashlib.sha256(data).hexdigest()[:16] / path.name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        staged.append(target)
    return tuple(staged)


def _licence(readme: Path) -> str:
    match = re.search(r"\*\*Licence:\*\*\s*`([^`]*)`", readme.read_text(encoding="utf-8", errors="replace")) \
        if readme.is_file() else None
    return match.group(1) if match else "unstated"


def resolve_examples(models: Sequence[LoadedModel]) -> ExampleSet:
    """The first model's own examples; the synthetic stand-ins for a synthetic-data model; else none."""
    if not models:
        return ExampleSet((), "No model is loaded.")
    model = models[0]
    if model.folder is not None:
        own = _images(model.folder / "examples")
        if own:
            return ExampleSet(_staged(own), f"Examples shipped with the release: photos from its test split "
                                   f"(licence: {_licence(model.folder / 'examples' / 'README.md')}; "
                                   "the release's examples/README.md names each source)")
    if model.synthetic:
        return ExampleSet(_images(SYNTHETIC_EXAMPLES_DIR),
                          "Examples: synthetic stand-ins from fakeface.data.synthetic, not real people")
    return ExampleSet((), "This release ships no example photos: drop one of your own.")
