"""Every ``FAKEFACE_*`` variable, read from the environment once into a frozen :class:`Settings`.

One rule for booleans (``1/0``, ``true/false``, ``yes/no``, ``on/off``, any
case); numbers are typed; a bad value raises :class:`SettingsError` naming the
variable, the value and what is accepted, instead of being guessed at. The
Space's OpenAI key is read too, but only its *value* is kept for the one
place that calls OpenAI with it, and never shown (``repr=False``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping, Sequence, TypeVar

__all__ = ["BOOLEAN_FALSE", "BOOLEAN_TRUE", "ENV", "Settings", "SettingsError", "default_threads", "parse_model_sources"]

T = TypeVar("T")

BOOLEAN_TRUE = ("1", "true", "yes", "on")
BOOLEAN_FALSE = ("0", "false", "no", "off")

# Field name -> environment variable. The one table of every variable the project reads.
ENV = {
    "models": "FAKEFACE_MODEL",                         # Hub ids / folders, comma separated
    "dataset": "FAKEFACE_DATASET",                      # default dataset of the Dataset tab
    "demo_banner": "FAKEFACE_DEMO_BANNER",              # show the "demo model" banner
    "fast_path": "FAKEFACE_FAST_PATH",                  # 0: serve fp32 even when an int8 graph ships
    "threads": "FAKEFACE_THREADS",                      # inference threads (default min(2, CPUs))
    "generate_per_session": "FAKEFACE_GENERATE_PER_SESSION",
    "generate_global": "FAKEFACE_GENERATE_GLOBAL",
    "generate_window_s": "FAKEFACE_GENERATE_WINDOW_S",
    "generate_timeout_s": "FAKEFACE_GENERATE_TIMEOUT_S",
    "verdict_batch_size": "FAKEFACE_VERDICT_BATCH",     # most verdict requests sharing one model call
    "verdict_wait_ms": "FAKEFACE_VERDICT_WAIT_MS",      # how long a verdict waits for company
    "taef2_dir": "FAKEFACE_TAEF2_DIR",                  # TAEF2 weights for making training twins (not the app)
    "openai_api_key": "OPENAI_API_KEY",
}


class SettingsError(ValueError):
    """An environment variable has a value the app cannot use."""

    def __init__(self, variable: str, value: str, expected: str):
        super().__init__(f"{variable}={value!r} is not valid: expected {expected}")
        self.variable = variable
        self.value = value
        self.expected = expected


def parse_model_sources(text: str | Sequence[str] | None) -> list[str]:
    """``FAKEFACE_MODEL`` -> sources: comma-, semicolon- or whitespace-separated, duplicates dropped."""
    if text is None:
        return []
    items = re.split(r"[,;\s]+", text) if isinstance(text, str) else [str(t).strip() for t in text]
    return list(dict.fromkeys(item for item in items if item))


def default_threads() -> int:
    """min(2, CPUs available to this process): the thread default of inference and the face stage.

    A free Space has 2 vCPUs; more threads than cores only adds contention.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(2, available))


def _boolean(variable: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in BOOLEAN_TRUE:
        return True
    if lowered in BOOLEAN_FALSE:
        return False
    raise SettingsError(variable, text, f"one of {'/'.join(BOOLEAN_TRUE)} or {'/'.join(BOOLEAN_FALSE)} (any case)")


def _number(kind: Callable[[str], T], *, minimum: float, what: str) -> Callable[[str, str], T]:
    def parse(variable: str, text: str) -> T:
        try:
            value = kind(text.strip())
        except ValueError:
            raise SettingsError(variable, text, what) from None
        if not value >= minimum:          # also rejects NaN
            raise SettingsError(variable, text, what)
        return value

    return parse


_POSITIVE_INT = _number(int, minimum=1, what="a whole number >= 1")
_COUNT = _number(int, minimum=0, what="a whole number >= 0")
_SECONDS = _number(float, minimum=1e-9, what="a number of seconds > 0")
_MILLISECONDS = _number(float, minimum=0, what="a number of milliseconds >= 0")


@dataclass(frozen=True)
class Settings:
    """The app's configuration. Build it with :meth:`from_env`; every field has the documented default."""

    models: tuple[str, ...] = ()
    dataset: str | None = None
    demo_banner: bool = False
    fast_path: bool = True
    threads: int | None = None                  # None: min(2, CPUs available)
    generate_per_session: int = 3
    generate_global: int = 30
    generate_window_s: float = 3600.0
    generate_timeout_s: float | None = None     # None: the OpenAI client's default (300 s)
    verdict_batch_size: int = 8
    verdict_wait_ms: float = 5.0
    taef2_dir: str | None = None                # None: ../shared/data/weights/taef2 beside the repo, if there
    openai_api_key: str | None = field(default=None, repr=False)   # a secret: never in repr or logs

    @property
    def space_has_openai_key(self) -> bool:
        return self.openai_api_key is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read every variable once (``os.environ`` by default); raises :class:`SettingsError` on a bad value."""
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = (env.get(ENV[name]) or "").strip()
            return value or None          # unset and empty mean the same: the default

        parsers: dict[str, Callable[[str, str], object]] = {
            "demo_banner": _boolean, "fast_path": _boolean, "threads": _POSITIVE_INT,
            "generate_per_session": _COUNT, "generate_global": _COUNT, "generate_window_s": _SECONDS,
            "generate_timeout_s": _SECONDS, "verdict_batch_size": _POSITIVE_INT, "verdict_wait_ms": _MILLISECONDS,
        }
        values: dict[str, object] = {"models": tuple(parse_model_sources(text("models"))), "dataset": text("dataset"),
                                     "taef2_dir": text("taef2_dir"), "openai_api_key": text("openai_api_key")}
        for name, parse in parsers.items():
            raw = text(name)
            if raw is not None:
                values[name] = parse(ENV[name], raw)
        return cls(**values)

    def resolve_threads(self) -> int:
        """Inference threads: ``threads`` when set, else :func:`default_threads`."""
        return self.threads if self.threads is not None else default_threads()

    def describe(self) -> dict[str, object]:
        """JSON-ready values by variable name, the key only as present/absent."""
        out: dict[str, object] = {ENV[f.name]: getattr(self, f.name) for f in fields(self) if f.repr}
        out[ENV["openai_api_key"]] = "set" if self.space_has_openai_key else "not set"
        return out
