"""What every tab shares: the app's context, error handling for callbacks, temporary output files.

Callbacks live at module level in :mod:`fakeface.app.tabs` and take an
:class:`AppContext` first, so tests call them directly without a server;
:func:`bind` hands them to Gradio with the context filled in.
"""
from __future__ import annotations

import functools
import inspect
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from fakeface.app.components import user_error
from fakeface.data.images import ImageDecodeError
from fakeface.generation.client import GenerationError
from fakeface.serving.browse import DatasetCache
from fakeface.serving.errors import AppError
from fakeface.serving.generate import RateLimiter
from fakeface.serving.models import LoadedModel, ModelRegistry
from fakeface.serving.verdicts import VerdictBatcher
from fakeface.utils.formatting import json_safe
from fakeface.utils.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["ANY", "AppContext", "CPU_CONCURRENCY", "CPU_LANE", "TEMP_FILE_TTL_S", "bind", "new_output_path",
           "public_result", "user_errors"]

ANY = "any"
# Two CPU cores: heavy work (detection, batches, evaluation) shares one lane
# of two; generation waits on OpenAI, not the CPU, so it gets its own.
CPU_LANE, CPU_CONCURRENCY = "cpu", 2
# Uploads, overlays, CSVs and generated images are temporary: a long-running
# Space deletes them after an hour (Gradio's cache and our own output folder).
TEMP_FILE_TTL_S = 3600


@dataclass
class AppContext:
    """Everything the callbacks need, built once per app."""

    settings: Settings
    registry: ModelRegistry
    limiter: RateLimiter
    datasets: DatasetCache
    batcher: VerdictBatcher
    output_dir: Path

    @classmethod
    def create(cls, settings: Settings, registry: ModelRegistry | None = None,
               limiter: RateLimiter | None = None) -> "AppContext":
        registry = registry or ModelRegistry.from_settings(settings)
        return cls(
            settings=settings, registry=registry, limiter=limiter or RateLimiter.from_settings(settings),
            datasets=DatasetCache(allowed_folders=[registry.dataset] if registry.dataset else []),
            batcher=VerdictBatcher.from_settings(registry.require_models, settings),
            output_dir=Path(tempfile.mkdtemp(prefix="fakeface-app-")),
        )

    def models(self) -> list[LoadedModel]:
        return self.registry.require_models()


def bind(fn: Callable, ctx: AppContext) -> Callable:
    """``fn(ctx, ...)`` as ``fn(...)`` for Gradio, keeping its name, hints and the rest of its signature."""
    @functools.wraps(fn)
    def bound(*args, **kwargs):
        return fn(ctx, *args, **kwargs)

    signature = inspect.signature(fn)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


def user_errors(fn: Callable) -> Callable:
    """Turn every failure of a callback into a ``gr.Error`` with a clear, secret-free message.

    Expected problems (bad files, missing models, OpenAI refusals) show their
    own message; anything else is logged and reported generically, and the
    app keeps serving.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ImageDecodeError as error:
            raise user_error(f"This file cannot be analysed: {error}.", "Unusable image") from None
        except GenerationError as error:
            raise user_error(str(error), "Image generation failed") from None
        except AppError as error:
            raise user_error(error.message) from None
        except Exception as error:  # noqa: BLE001 - never a traceback (or an input) in the UI
            logger.exception("unexpected error in %s", fn.__name__)
            raise user_error(f"Something went wrong ({type(error).__name__}); please try again.") from None

    return wrapper


def public_result(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON part of a result: no images, no raw bytes."""
    return json_safe({k: v for k, v in result.items() if k not in ("gradcam", "image_bytes")})


def new_output_path(folder: Path, stem: str, suffix: str) -> Path:
    """A fresh file name in ``folder``; files older than ``TEMP_FILE_TTL_S`` are removed first."""
    cutoff = time.time() - TEMP_FILE_TTL_S
    for old in folder.glob("*"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass                              # another request removed it first
    return folder / f"{stem}-{uuid.uuid4().hex[:12]}{suffix}"
