"""In-app generation: one face from OpenAI, analysed like an upload, under a rate limit.

The rate limit protects the Space owner's OpenAI key; a visitor's own key is
used for that one request only (never kept, logged or shown) and is not
limited, since their account pays.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fakeface.generation.images import generate_face
from fakeface.serving.analysis import analyze_bytes
from fakeface.serving.errors import AppError, RateLimitExceeded
from fakeface.serving.models import LoadedModel
from fakeface.utils.constants import DEFAULT_IMAGE_MODEL
from fakeface.utils.settings import Settings

__all__ = ["GenerationRequest", "RateLimiter", "generate_and_analyze"]


class RateLimiter:
    """Sliding-window limits per session and overall (protects the Space owner's OpenAI key).

    Each :meth:`acquire` counts an attempt, successful or not: a failing
    request costs the Space nothing, but retry storms are still abuse.
    """

    def __init__(self, per_session: int = 3, global_limit: int = 30, window_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.per_session, self.global_limit, self.window_s = per_session, global_limit, window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    @classmethod
    def from_settings(cls, settings: Settings) -> "RateLimiter":
        return cls(settings.generate_per_session, settings.generate_global, settings.generate_window_s)

    @classmethod
    def from_env(cls, environ=None) -> "RateLimiter":
        """FAKEFACE_GENERATE_PER_SESSION / _GLOBAL / _WINDOW_S via :class:`Settings` (a bad value raises)."""
        return cls.from_settings(Settings.from_env(environ))

    def _expire(self, stamps: deque[float], now: float) -> None:
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()

    def acquire(self, session_id: str) -> None:
        """Count one attempt for ``session_id`` or raise :class:`RateLimitExceeded`."""
        now = self._clock()
        with self._lock:
            stamps = self._sessions.setdefault(session_id or "anonymous", deque())
            self._expire(stamps, now)
            self._expire(self._all, now)
            for scope, queue, limit in (("session", stamps, self.per_session), ("space", self._all, self.global_limit)):
                if len(queue) >= limit:
                    raise RateLimitExceeded(scope=scope, limit=limit, window_s=self.window_s,
                                            retry_after=queue[0] + self.window_s - now)
            stamps.append(now)
            self._all.append(now)
            # Forget idle sessions so the table cannot grow without bound.
            if len(self._sessions) > 10_000:
                for key in [k for k, q in self._sessions.items() if not q]:
                    del self._sessions[key]

    def usage(self) -> dict[str, Any]:
        """Attempts counted in the current window: ``space`` (all sessions) and per ``sessions`` id."""
        now = self._clock()
        with self._lock:
            self._expire(self._all, now)
            for stamps in self._sessions.values():
                self._expire(stamps, now)
            return {"space": len(self._all), "sessions": {k: len(q) for k, q in self._sessions.items() if q}}

    def reset(self) -> None:
        """Forget every attempt (an operator's reset; tests start from a clean slate)."""
        with self._lock:
            self._sessions.clear()
            self._all.clear()


@dataclass
class GenerationRequest:
    """What the Generate tab asks for. ``user_key`` is used for this request only and never kept."""

    prompt: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    size: str = "1024x1024"
    quality: str = "medium"
    user_key: str | None = field(default=None, repr=False)


def _choose_key(request: GenerationRequest, settings: Settings, limiter: RateLimiter, session_id: str) -> str:
    user_key = (request.user_key or "").strip()
    if user_key:
        return user_key
    if not settings.space_has_openai_key:
        raise AppError("This Space has no OpenAI key configured:", "enter your own OpenAI API key to generate.",
                       kind="no_key")
    limiter.acquire(session_id)
    return settings.openai_api_key


def _choose_prompt(request: GenerationRequest) -> str | dict[str, str]:
    prompt = (request.prompt or "").strip()
    if prompt:
        return prompt
    chosen = {k: v for k, v in (request.attributes or {}).items() if v}
    if not chosen:
        raise AppError("Describe the face:", "write a prompt or pick at least one attribute.", kind="no_input")
    return chosen


def generate_and_analyze(request: GenerationRequest, models: Sequence[LoadedModel], *, session_id: str,
                         limiter: RateLimiter, settings: Settings | None = None) -> dict[str, Any]:
    """Generate one face with OpenAI, then analyse it exactly like an upload.

    The user's own key is used when given (no Space rate limit); otherwise the
    Space's ``OPENAI_API_KEY`` under ``limiter``. Every failure raises
    :class:`AppError` or a ``fakeface.generation.client.GenerationError``
    whose message is user-facing and key-free. The result is
    :func:`analyze_bytes`' dict plus ``generated`` (model, prompt, revised
    prompt) and ``image_bytes``/``image_format``.
    """
    settings = settings or Settings.from_env()
    key = _choose_key(request, settings, limiter, session_id)
    prompt = _choose_prompt(request)
    options = {} if settings.generate_timeout_s is None else {"timeout": settings.generate_timeout_s}
    try:
        generated = generate_face(prompt, api_key=key, model=request.model or DEFAULT_IMAGE_MODEL,
                                  size=request.size, quality=request.quality, **options)
    except ValueError as error:
        raise AppError(str(error), kind="bad_input") from None
    result = analyze_bytes(generated.data, f"generated{generated.extension}", models)
    result["generated"] = {"model": generated.model, "prompt": generated.prompt,
                           "revised_prompt": generated.revised_prompt, "size": generated.size,
                           "quality": generated.quality, "attributes": dict(generated.attributes),
                           "format": generated.format,
                           "key": "yours" if (request.user_key or "").strip() else "the Space's"}
    result["image_bytes"] = generated.data
    result["image_format"] = generated.format
    return result
