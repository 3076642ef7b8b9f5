"""Serving's own errors, as data: what went wrong (``problem``), how to fix it (``fix``) and a ``kind``.

The UI shows ``str(error)`` (problem, then fix); callers that need to decide
something (an API client, a test, a retry) read the fields, never the text.
No message ever holds a secret or a server path.
"""
from __future__ import annotations

__all__ = ["AppError", "RateLimitExceeded"]


class AppError(Exception):
    """A problem the user can act on.

    ``kind`` is a short stable tag: ``no_input``, ``bad_input``, ``too_large``,
    ``no_model``, ``not_allowed``, ``not_found``, ``no_key``, ``rate_limited``,
    ``unavailable``.
    """

    def __init__(self, problem: str, fix: str | None = None, *, kind: str = "bad_input"):
        self.problem = problem
        self.fix = fix
        self.kind = kind
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem} {self.fix}" if self.fix else self.problem


class RateLimitExceeded(AppError):
    """Too many generations with the Space's key: who hit which ``limit`` per ``window_s``; ``retry_after`` s."""

    def __init__(self, *, scope: str, limit: int, window_s: float, retry_after: float):
        self.scope = scope                # "session" or "space"
        self.limit = limit
        self.window_s = window_s
        self.retry_after = retry_after
        who = "this session" if scope == "session" else "this Space"
        super().__init__(
            f"The Space's OpenAI key allows {limit} generation(s) per {format_duration(window_s)} for {who};",
            f"try again in {format_duration(retry_after)}, or enter your own OpenAI key.",
            kind="rate_limited",
        )


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
