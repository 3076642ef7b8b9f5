"""The OpenAI side of generation: typed errors, model and quality choices, keys and clients.

Keys come from the caller (the app, per request), ``OPENAI_API_KEY`` or a
``.env`` file, and go nowhere else: not into messages, logs or files. Server
error text is kept only after :func:`redact_secrets`.
"""
from __future__ import annotations

import ast
import contextlib
import email.utils
import importlib.util
import os
import re
import typing
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from fakeface.utils.constants import ENV_OPENAI_BASE_URL, ENV_OPENAI_KEY, RETIRED_IMAGE_MODELS

from dotenv import dotenv_values

# The openai package (~0.3 s to import) loads with the first client or error to classify: the app builds its
# Generate tab, and serves verdicts, without it.

__all__ = [
    "AccessDeniedError", "ContentRefusedError", "DEFAULT_QUALITY", "DEFAULT_SIZE", "DEFAULT_TIMEOUT_S",
    "GenerationError", "InvalidKeyError", "InvalidResponseError", "QuotaExceededError", "RateLimitedError",
    "RequestRejectedError", "ServiceUnavailableError", "available_image_models", "available_image_qualities",
    "check_quality", "check_size", "classify_openai_error", "create_openai_client", "redact_secrets",
    "resolve_api_key", "resolve_base_url", "resolve_image_model",
]

DEFAULT_SIZE = "1024x1024"
DEFAULT_QUALITY = "high"
# A high-quality 1024² image takes tens of seconds; bigger sizes take longer.
DEFAULT_TIMEOUT_S = 300.0
# Models the SDK still lists but OpenAI has announced for shutdown (facts.md).
SCHEDULED_SHUTDOWN_MODELS = {"gpt-image-1-mini": "2026-12-01"}
# Qualities the SDK keeps for retired DALL·E models only.
_RETIRED_QUALITIES = ("standard", "hd")
_SIZE_RE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
# Anything shaped like an OpenAI secret key, in case a server message echoes one.
_KEY_LIKE_RE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{6,}")


# --------------------------------------------------------------------------- errors


class GenerationError(Exception):
    """A generation failed. ``str(err)`` is a user-facing message that never contains a key.

    ``kind`` names the class of failure in manifests and summaries; ``detail`` is the
    server's own message with secrets redacted (may be empty).
    """

    kind = "error"
    #: the whole run should stop (no point trying the next image)
    fatal = False

    def __init__(self, message: str, *, detail: str = "", status_code: int | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.status_code = status_code
        self.code = code


class InvalidKeyError(GenerationError):
    """No key, a malformed key, or a key the API rejected (401)."""

    kind, fatal = "invalid_key", True


class AccessDeniedError(GenerationError):
    """The key is valid but may not use this model or endpoint (403)."""

    kind, fatal = "permission_denied", True


class QuotaExceededError(GenerationError):
    """The account has no credit left (429 ``insufficient_quota``): waiting will not help."""

    kind, fatal = "quota_exceeded", True


class ContentRefusedError(GenerationError):
    """The safety system refused the prompt or the result (moderation / content policy)."""

    kind = "refused"


class RateLimitedError(GenerationError):
    """Too many requests (429). ``retry_after`` is the server's wait hint in seconds, if any."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailableError(GenerationError):
    """A timeout, a dropped connection or a server error (5xx): worth a bounded retry."""

    kind = "unavailable"


class RequestRejectedError(GenerationError):
    """Any other refusal of the request itself (a 4xx such as an unsupported size)."""

    kind = "rejected"


class InvalidResponseError(GenerationError):
    """The API answered, but not with a decodable image."""

    kind = "invalid_response"


# --------------------------------------------------------------------------- choices


def _literal_values(node: ast.AST | None) -> tuple[str, ...]:
    """The strings of the first ``Literal[...]`` inside an annotation's syntax tree (empty: none)."""
    for sub in ast.walk(node) if node is not None else ():
        if isinstance(sub, ast.Subscript) and getattr(sub.value, "id", getattr(sub.value, "attr", None)) == "Literal":
            items = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
            return tuple(item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str))
    return ()


def _sdk_annotation(module: str, owner: str | None, name: str) -> ast.AST | None:
    """The annotation of ``name`` (inside class ``owner``, or at module level) in the installed openai SDK's
    ``openai/types/<module>.py``, read as source: importing the SDK to list its choices would cost the app's start."""
    spec = importlib.util.find_spec("openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "types" / f"{module}.py"
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if owner is not None:
        body = next((n.body for n in body if isinstance(n, ast.ClassDef) and n.name == owner), [])
    return next((n.value if owner is None else n.annotation for n in body if isinstance(n, ast.AnnAssign)
                 and isinstance(n.target, ast.Name) and n.target.id == name), None)


@lru_cache(maxsize=None)
def _sdk_choices(what: str) -> tuple[str, ...]:
    """The SDK's image models (``"models"``) or image qualities (``"qualities"``), in SDK order: read from its
    source, or where that source has another shape, from the imported types (the same values)."""
    module, owner, name = {"models": ("image_model", None, "ImageModel"),
                           "qualities": ("image_generate_params", "ImageGenerateParamsBase", "quality")}[what]
    with contextlib.suppress(OSError, SyntaxError, ValueError):
        values = _literal_values(_sdk_annotation(module, owner, name))
        if values:
            return values
    if what == "models":
        from openai.types import ImageModel

        return typing.get_args(ImageModel)
    from openai.types.image_generate_params import ImageGenerateParamsBase

    annotation = typing.get_type_hints(ImageGenerateParamsBase)["quality"]
    return typing.get_args(next(a for a in typing.get_args(annotation) if typing.get_args(a)))


def available_image_models() -> tuple[str, ...]:
    """Image models the installed SDK lists, minus retired and soon-shut-down ones (SDK order)."""
    dropped = set(RETIRED_IMAGE_MODELS) | set(SCHEDULED_SHUTDOWN_MODELS)
    return tuple(m for m in _sdk_choices("models") if m not in dropped)


def available_image_qualities() -> tuple[str, ...]:
    """Quality values the installed SDK accepts for GPT image models (``auto`` included)."""
    return tuple(q for q in _sdk_choices("qualities") if q not in _RETIRED_QUALITIES)


def resolve_image_model(model: str | None) -> str:
    """``model`` if it is a current image model, else ``ValueError`` saying why and listing choices."""
    choices = available_image_models()
    if model in choices:
        return model
    if model in RETIRED_IMAGE_MODELS:
        why = "has been retired by OpenAI"
    elif model in SCHEDULED_SHUTDOWN_MODELS:
        why = f"is scheduled for shutdown on {SCHEDULED_SHUTDOWN_MODELS[model]}"
    else:
        why = "is not an image model this version of the openai package knows"
    raise ValueError(f"image model {model!r} {why}; choose one of: {', '.join(choices)}")


def check_size(size: str) -> str:
    if size == "auto":
        return size
    match = _SIZE_RE.match(size or "")
    if not match or min(int(match[1]), int(match[2])) <= 0:
        raise ValueError(f"image size must be WIDTHxHEIGHT (e.g. {DEFAULT_SIZE}) or 'auto', got {size!r}")
    return size


def check_quality(quality: str) -> str:
    choices = available_image_qualities()
    if quality not in choices:
        raise ValueError(f"image quality {quality!r} is not supported; choose one of: {', '.join(choices)}")
    return quality


# --------------------------------------------------------------------------- keys and clients


def resolve_api_key(api_key: str | None = None, *, env_file: str | os.PathLike | None = ".env") -> str:
    """The OpenAI key to use: ``api_key`` if given (the app's per-request key), else
    ``OPENAI_API_KEY`` from the environment, else from ``env_file`` (not loaded into
    the environment, so child processes do not inherit it).

    Raises :class:`InvalidKeyError` when there is none or it cannot be a key.
    """
    key = api_key
    source = "the key you entered"
    if not key:
        key = os.environ.get(ENV_OPENAI_KEY)
        source = f"{ENV_OPENAI_KEY}"
    if not key and env_file is not None and Path(env_file).is_file():
        key = dotenv_values(env_file).get(ENV_OPENAI_KEY)
        source = f"{ENV_OPENAI_KEY} in {env_file}"
    if not key or not key.strip():
        raise InvalidKeyError(
            f"No OpenAI API key: set {ENV_OPENAI_KEY} in the environment or in a .env file "
            "(or enter your own key)."
        )
    key = key.strip()
    # A key with spaces or control characters would fail inside the HTTP layer,
    # whose error text may quote the header value; refuse it here, without quoting it.
    if not all(33 <= ord(c) < 127 for c in key):
        raise InvalidKeyError(f"The OpenAI API key in {source} is malformed: it must be one word of plain characters.")
    return key


def resolve_base_url(base_url: str | None = None) -> str | None:
    """``base_url``, else ``OPENAI_BASE_URL`` (how tests and self-hosted proxies point us elsewhere), else None."""
    return base_url or os.environ.get(ENV_OPENAI_BASE_URL) or None


def create_openai_client(api_key: str | None = None, *, base_url: str | None = None,
                         timeout: float = DEFAULT_TIMEOUT_S, env_file: str | os.PathLike | None = ".env"):
    """An ``openai.OpenAI`` client with the SDK's own retries off (we retry, so counts stay honest)."""
    import openai

    return openai.OpenAI(
        api_key=resolve_api_key(api_key, env_file=env_file),
        base_url=resolve_base_url(base_url),
        timeout=timeout,
        max_retries=0,
    )


def redact_secrets(text: str, *secrets: str | None) -> str:
    """``text`` with each of ``secrets`` and anything shaped like an OpenAI key replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE_RE.sub("[redacted]", text)


# --------------------------------------------------------------------------- error classification


def _parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    with contextlib.suppress(TypeError, ValueError):
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, (parsed - datetime.now(timezone.utc)).total_seconds()) if parsed else None


def classify_openai_error(error: BaseException, *, api_key: str | None = None) -> GenerationError:
    """Map an ``openai`` exception (or an unexpected one) to a key-free :class:`GenerationError`."""
    import openai

    status = getattr(error, "status_code", None)
    code = getattr(error, "code", None)
    server_text = getattr(error, "message", None) or str(error)
    detail = redact_secrets(server_text, api_key)
    info = {"detail": detail, "status_code": status, "code": code}
    if not isinstance(error, openai.OpenAIError):
        return GenerationError(f"Image generation failed unexpectedly ({type(error).__name__}).",
                               detail=redact_secrets(str(error), api_key))
    if isinstance(error, openai.AuthenticationError):
        return InvalidKeyError("The OpenAI API key was rejected (invalid, revoked or expired). "
                               "Check the key and try again.", **info)
    if isinstance(error, openai.PermissionDeniedError):
        return AccessDeniedError("This OpenAI key is not allowed to use this image model or endpoint "
                                 "(organisation verification or project permissions may be missing).", **info)
    if isinstance(error, openai.RateLimitError):
        if code == "insufficient_quota":
            return QuotaExceededError("The OpenAI account has run out of credit (insufficient quota). "
                                      "Add credit or use another key.", **info)
        retry_after = _parse_retry_after(getattr(getattr(error, "response", None), "headers", None))
        return RateLimitedError("OpenAI is rate limiting these requests; try again shortly.",
                                retry_after=retry_after, **info)
    if isinstance(error, openai.BadRequestError) and code in ("content_policy_violation", "moderation_blocked"):
        return ContentRefusedError("OpenAI's safety system refused this request "
                                   f"({code.replace('_', ' ')}). Try a different prompt.", **info)
    if isinstance(error, openai.APITimeoutError):
        return ServiceUnavailableError("OpenAI did not answer in time; try again later.", **info)
    if isinstance(error, openai.APIConnectionError):
        return ServiceUnavailableError("Could not reach the OpenAI API (connection failed); try again later.", **info)
    if isinstance(error, openai.InternalServerError) or (status is not None and status >= 500):
        return ServiceUnavailableError(f"OpenAI had a server error ({status}); try again later.", **info)
    if isinstance(error, openai.APIStatusError):
        return RequestRejectedError(f"OpenAI rejected the request ({status}{', ' + code if code else ''}).", **info)
    return GenerationError(f"Image generation failed ({type(error).__name__}).", **info)
