"""AI-generated faces from the OpenAI images API, for the dataset and for the app.

Two ways in:

- :func:`generate_face` makes one image for one request (the app's Generate tab):
  a per-request key, no retries, and a :class:`GenerationError` subclass with a
  user-facing, key-free message on any failure.
- :func:`plan_generation` + :func:`run_generation` make a whole folder
  (``scripts/generate_faces.py``): a deterministic plan, bounded concurrency,
  classified errors and retries, and a crash-safe ``manifest.jsonl``.

Never lose a paid image: every planned image has a deterministic id. Its file is
written atomically (temporary file, fsync, rename) *before* its manifest line is
appended, so a run killed at any moment leaves at worst an image without a line;
the next run of the same command adopts it (after checking it decodes) instead
of paying for it again, and skips everything already done.

Keys come from the caller (the app, per request), ``OPENAI_API_KEY`` or a
``.env`` file, and go nowhere else: not into messages, logs or files. Server
error text is kept only after :func:`redact_secrets`.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import typing
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fakeface.utils.constants import DEFAULT_IMAGE_MODEL, ENV_OPENAI_BASE_URL, ENV_OPENAI_KEY, RETIRED_IMAGE_MODELS
from fakeface.utils.fileio import TEMP_MARK, fsync_dir, write_atomic
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.data.sources import MANIFEST_NAME  # one name for the file generation writes and the dataset build reads
from fakeface.generation.prompts import build_face_prompt, build_lookalike_prompt, plan_balanced_attributes, validate_attributes

import openai
from dotenv import dotenv_values
from openai.types import ImageModel
from openai.types.image_generate_params import ImageGenerateParamsBase
from tqdm.auto import tqdm

__all__ = [
    "AccessDeniedError", "DEFAULT_QUALITY", "DEFAULT_SIZE", "GeneratedImage", "GenerationError",
    "GenerationSummary", "InvalidKeyError", "InvalidResponseError", "MANIFEST_NAME", "PlannedImage",
    "QuotaExceededError", "RateLimitedError", "RequestRejectedError", "ContentRefusedError",
    "ServiceUnavailableError", "available_image_models", "available_image_qualities",
    "create_openai_client", "describe_plan", "generate_face", "load_manifest", "plan_generation",
    "redact_secrets", "resolve_api_key", "resolve_base_url", "resolve_image_model", "run_generation",
]

log = logging.getLogger(__name__)

DEFAULT_SIZE = "1024x1024"
DEFAULT_QUALITY = "high"
# A high-quality 1024² image takes tens of seconds; bigger sizes take longer.
DEFAULT_TIMEOUT_S = 300.0
# Models the SDK still lists but OpenAI has announced for shutdown (facts.md).
SCHEDULED_SHUTDOWN_MODELS = {"gpt-image-1-mini": "2026-12-01"}
# Qualities the SDK keeps for retired DALL·E models only.
_RETIRED_QUALITIES = ("standard", "hd")
# What the API accepts as an edit input without conversion (< 50 MB each).
_EDIT_INPUT_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EDIT_INPUT_MAX_BYTES = 50 * 1024 * 1024
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_REAL_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
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


def available_image_models() -> tuple[str, ...]:
    """Image models the installed SDK lists, minus retired and soon-shut-down ones (SDK order)."""
    dropped = set(RETIRED_IMAGE_MODELS) | set(SCHEDULED_SHUTDOWN_MODELS)
    return tuple(m for m in typing.get_args(ImageModel) if m not in dropped)


def available_image_qualities() -> tuple[str, ...]:
    """Quality values the installed SDK accepts for GPT image models (``auto`` included)."""
    annotation = typing.get_type_hints(ImageGenerateParamsBase)["quality"]
    literal = next(a for a in typing.get_args(annotation) if typing.get_args(a))
    return tuple(q for q in typing.get_args(literal) if q not in _RETIRED_QUALITIES)


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


def _check_size(size: str) -> str:
    if size == "auto":
        return size
    match = _SIZE_RE.match(size or "")
    if not match or min(int(match[1]), int(match[2])) <= 0:
        raise ValueError(f"image size must be WIDTHxHEIGHT (e.g. {DEFAULT_SIZE}) or 'auto', got {size!r}")
    return size


def _check_quality(quality: str) -> str:
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


# --------------------------------------------------------------------------- one image


@dataclass(frozen=True)
class GeneratedImage:
    """One image exactly as the API returned it (bytes not re-encoded, so C2PA survives)."""

    data: bytes
    format: str                 # "PNG", "JPEG", "WEBP"
    width: int
    height: int
    model: str
    prompt: str
    revised_prompt: str | None
    size: str
    quality: str
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def mime(self) -> str:
        return _MIME.get(self.format, "application/octet-stream")

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self.format, "." + self.format.lower())


@dataclass(frozen=True)
class _Request:
    prompt: str
    model: str
    size: str
    quality: str
    attributes: dict[str, str]
    reference: tuple[str, bytes, str] | None = None   # (filename, bytes, mime) for look-alikes


def _prepare_reference(source: bytes | str | os.PathLike, name: str = "reference.png") -> tuple[str, bytes, str]:
    """A real face as the edit endpoint accepts it: original bytes if PNG/JPEG/WebP, else PNG."""
    data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
    decoded = load_image(data)      # ImageDecodeError says precisely what is wrong with the file
    if decoded.format in _EDIT_INPUT_FORMATS and len(data) < _EDIT_INPUT_MAX_BYTES:
        return (Path(name).stem + _EXTENSIONS[decoded.format], data, _EDIT_INPUT_FORMATS[decoded.format])
    buffer = io.BytesIO()
    decoded.image.save(buffer, format="PNG")
    return (Path(name).stem + ".png", buffer.getvalue(), "image/png")


def _call_images_api(client, request: _Request, *, api_key: str | None, timeout: float | None) -> GeneratedImage:
    """One API call, no retries. Raises a :class:`GenerationError` subclass on any failure."""
    common = {"model": request.model, "prompt": request.prompt, "n": 1, "size": request.size,
              "quality": request.quality}
    if timeout is not None:
        common["timeout"] = timeout
    try:
        if request.reference is None:
            response = client.images.generate(**common)
        else:
            response = client.images.edit(image=request.reference, input_fidelity="high", **common)
    except Exception as error:          # every SDK failure becomes one of ours
        raise classify_openai_error(error, api_key=api_key) from None
    item = response.data[0] if response.data else None
    if item is None or not item.b64_json:
        raise InvalidResponseError("OpenAI answered without an image.")
    try:
        data = base64.b64decode(item.b64_json, validate=True)
        decoded = load_image(data)
    except (binascii.Error, ValueError) as error:
        # ImageDecodeError is a ValueError: the message says what the bytes were instead.
        raise InvalidResponseError("OpenAI returned data that is not a valid image.",
                                   detail=redact_secrets(str(error), api_key)) from None
    return GeneratedImage(
        data=data, format=decoded.format, width=decoded.width, height=decoded.height,
        model=request.model, prompt=request.prompt, revised_prompt=item.revised_prompt or None,
        size=request.size, quality=request.quality, attributes=dict(request.attributes),
    )


def generate_face(
    prompt: str | Mapping[str, str] | None = None,
    *,
    api_key: str | None = None,
    model: str = DEFAULT_IMAGE_MODEL,
    size: str = DEFAULT_SIZE,
    quality: str = DEFAULT_QUALITY,
    reference_image: bytes | str | os.PathLike | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    client=None,
) -> GeneratedImage:
    """Generate one face image; the app's entry point.

    ``prompt`` is free text, or a mapping of attributes (any subset of
    :data:`fakeface.generation.prompts.ATTRIBUTE_GRID`) turned into a portrait prompt. With
    ``reference_image`` (bytes or a path of a real face) this makes a look-alike
    through ``images.edit(input_fidelity="high")``; ``prompt`` then defaults to the
    look-alike prompt. ``api_key`` is used for this call only (falls back to
    ``OPENAI_API_KEY``); ``base_url`` falls back to ``OPENAI_BASE_URL``.

    One attempt, no retries. Raises ``ValueError`` for bad arguments and a
    :class:`GenerationError` subclass for every API failure; messages are
    user-facing and never contain the key.
    """
    model = resolve_image_model(model)
    size, quality = _check_size(size), _check_quality(quality)
    attributes: dict[str, str] = {}
    if isinstance(prompt, Mapping):
        attributes = validate_attributes(prompt)
        text = build_face_prompt(attributes)
    elif prompt and prompt.strip():
        text = prompt.strip()
    elif reference_image is not None:
        text = build_lookalike_prompt()
    else:
        raise ValueError("describe the face: give a prompt or some attributes")
    reference = _prepare_reference(reference_image) if reference_image is not None else None
    request = _Request(text, model, size, quality, attributes, reference)
    if client is not None:
        return _call_images_api(client, request, api_key=api_key, timeout=timeout)
    key = resolve_api_key(api_key, env_file=None)
    with create_openai_client(key, base_url=base_url, timeout=timeout, env_file=None) as own_client:
        return _call_images_api(own_client, request, api_key=key, timeout=None)


# --------------------------------------------------------------------------- planning


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
    size, quality = _check_size(size), _check_quality(quality)
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


# --------------------------------------------------------------------------- manifest and files


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_manifest(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete record of ``out_dir/manifest.jsonl`` in order (a torn last line is ignored)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break                            # torn by a kill mid-append; repaired on the next run
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
            continue
        log.warning("%s line %d is not JSON; ignored", path, number)
    return records


class _Manifest:
    """Append-only JSONL, one fsynced ``write`` per record, safe across threads."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / MANIFEST_NAME
        self._lock = threading.Lock()
        self._repair()

    def _repair(self) -> None:
        # A kill mid-append can leave a last line without its newline: cut it off
        # (its image, if any, is on disk and is adopted like any orphan).
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s ended with a partial line (a run was killed); removed it", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def _exclusive_run(out_dir: Path) -> Iterator[None]:
    """One run per output folder at a time (the lock dies with the process, even on SIGKILL)."""
    import fcntl

    handle = open(out_dir / ".generate.lock", "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another generation run is writing to {out_dir}; wait for it to finish") from None
        yield
    finally:
        handle.close()


def _record(item: PlannedImage, *, status: str, file: str | None = None, image: GeneratedImage | None = None,
            error: GenerationError | None = None, created_at: str | None = None,
            width: int | None = None, height: int | None = None, fmt: str | None = None,
            nbytes: int | None = None, adopted: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": item.id, "file": file, "status": status, "mode": item.mode, "model": item.model,
        "prompt": item.prompt, "revised_prompt": image.revised_prompt if image else None,
        "attributes": dict(item.attributes), "source_id": item.source_id,
        "size": item.size, "quality": item.quality,
        "width": image.width if image else width, "height": image.height if image else height,
        "format": image.format if image else fmt, "bytes": len(image.data) if image else nbytes,
        "created_at": created_at or _now(),
    }
    if adopted:
        record["adopted"] = True
    if error is not None:
        record["error"] = {"kind": error.kind, "message": error.message, "detail": error.detail,
                           "status_code": error.status_code, "code": error.code}
    return record


# --------------------------------------------------------------------------- the run


@dataclass
class GenerationSummary:
    """What a run did; ``format()`` is the end-of-run report."""

    planned: int = 0
    already_done: int = 0
    adopted: int = 0
    ok: int = 0
    refused: int = 0
    failed: int = 0
    not_attempted: int = 0
    capped: int = 0
    missing_files: int = 0
    requests: int = 0
    retries: int = 0
    rate_limit_wait_s: float = 0.0
    errors: Counter = field(default_factory=Counter)        # kind -> count of failed attempts
    stopped: str | None = None                              # why the run stopped early
    stopped_kind: str | None = None
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every planned image is now done (ok or refused)."""
        return self.already_done + self.adopted + self.ok + self.refused == self.planned

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = dict(self.errors)
        out["complete"] = self.complete
        return out

    def format(self) -> str:
        lines = [
            f"planned {self.planned}: {self.already_done} already done, {self.adopted} adopted from an "
            f"interrupted run, {self.ok} generated, {self.refused} refused, {self.failed} failed, "
            f"{self.capped} left by --max-images, {self.not_attempted} not attempted",
            f"API requests {self.requests} (retries {self.retries}), waited {self.rate_limit_wait_s:.1f} s "
            f"for rate limits, {self.elapsed_s:.1f} s in all",
        ]
        if self.errors:
            lines.append("errors: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.errors.items())))
        if self.missing_files:
            lines.append(f"warning: {self.missing_files} manifest entries point to files that are gone "
                         "(not regenerated; delete their lines to make them again)")
        if self.stopped:
            lines.append(f"STOPPED: {self.stopped}")
        elif self.failed:
            lines.append("Run the same command again to retry the failed images.")
        return "\n".join(lines)


@dataclass
class _RetryPolicy:
    max_attempts: int = 3              # per image, for timeouts / connection / 5xx
    max_rate_limit_waits: int = 8      # per image
    backoff_s: float = 2.0             # first wait after a transient failure, doubled each time
    max_backoff_s: float = 30.0
    default_retry_after_s: float = 10.0
    max_retry_after_s: float = 120.0   # cap on any server-requested wait


def _reconcile(out_dir: Path, plan: Sequence[PlannedImage], summary: GenerationSummary,
               manifest: _Manifest) -> set[str]:
    """Ids already done, after removing temp files and adopting paid images that lack a line."""
    for temp in out_dir.glob(f".*{TEMP_MARK}*"):
        log.info("removing %s left by an interrupted run", temp.name)
        temp.unlink(missing_ok=True)
    by_id: dict[str, dict[str, Any]] = {}
    for record in load_manifest(out_dir):
        # An "ok" or "refused" line is final; a later "failed" never overrides it.
        if by_id.get(record.get("id"), {}).get("status") in ("ok", "refused"):
            continue
        by_id[record.get("id")] = record
    done: set[str] = set()
    for item in plan:
        record = by_id.get(item.id)
        if record and record.get("status") == "ok":
            done.add(item.id)
            if not (out_dir / str(record.get("file"))).is_file():
                summary.missing_files += 1
            continue
        if record and record.get("status") == "refused":
            done.add(item.id)
            continue
        orphans = [f for f in out_dir.glob(f"{item.id}.*") if f.suffix in _EXTENSIONS.values()]
        for orphan in sorted(orphans):
            try:
                decoded = load_image(orphan)
            except ImageDecodeError as error:
                # Cannot happen with atomic writes unless the disk lies; keep the
                # bytes for inspection but out of the dataset's way.
                log.warning("%s does not decode (%s); moved aside and regenerated", orphan.name, error)
                orphan.rename(orphan.with_name(f".{orphan.name}.corrupt"))
                continue
            stat = orphan.stat()
            manifest.append(_record(
                item, status="ok", file=orphan.name, adopted=True, width=decoded.width, height=decoded.height,
                fmt=decoded.format, nbytes=stat.st_size,
                created_at=datetime.fromtimestamp(stat.st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")))
            summary.adopted += 1
            done.add(item.id)
            break
    summary.already_done = len(done) - summary.adopted
    return done


def run_generation(
    plan: Sequence[PlannedImage],
    out_dir: str | os.PathLike,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    env_file: str | os.PathLike | None = ".env",
    concurrency: int = 4,
    max_images: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_attempts: int = 3,
    max_retry_after_s: float = 120.0,
    backoff_s: float = 2.0,
    max_consecutive_failures: int = 10,
    sleep: Callable[[float], None] | None = None,
    progress: bool = True,
    client=None,
) -> GenerationSummary:
    """Make the planned images in ``out_dir`` that are not there yet; returns the summary.

    Skips images already in ``manifest.jsonl`` (ok or refused), adopts image files
    an interrupted run wrote but did not record, then calls the API for at most
    ``max_images`` of the rest, ``concurrency`` at a time. Per image: rate limits
    wait ``retry-after`` (capped at ``max_retry_after_s``) and retry; timeouts,
    dropped connections and 5xx retry up to ``max_attempts`` with exponential
    back-off; refusals are recorded as ``refused``; anything else as ``failed``
    (retried by the next run). An invalid key, permission denied or exhausted
    quota stops the run at once (images in flight are still saved), as do
    ``max_consecutive_failures`` failures in a row (a cost guard against a
    misconfigured run). Waits end early when the run stops; ``sleep`` replaces them
    so tests need not wait. Ctrl-C stops the run after the requests in flight
    have finished and been saved (they are paid for).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not 1 <= concurrency <= 32:
        raise ValueError(f"--concurrency must be between 1 and 32, got {concurrency}")
    if max_images is not None and max_images < 0:
        raise ValueError(f"--max-images must be >= 0, got {max_images}")
    ids = [p.id for p in plan]
    if len(set(ids)) != len(ids):
        raise ValueError("the plan has duplicate image ids")
    policy = _RetryPolicy(max_attempts=max_attempts, backoff_s=backoff_s, max_retry_after_s=max_retry_after_s)
    summary = GenerationSummary(planned=len(plan))
    started = time.monotonic()
    with _exclusive_run(out):
        manifest = _Manifest(out)
        done = _reconcile(out, plan, summary, manifest)
        todo = [p for p in plan if p.id not in done]
        if max_images is not None and len(todo) > max_images:
            summary.capped = len(todo) - max_images
            todo = todo[:max_images]
        if todo:
            own_client = client is None
            key = None
            if own_client:
                key = resolve_api_key(api_key, env_file=env_file)   # fail before any work if missing
                client = create_openai_client(key, base_url=base_url, timeout=timeout, env_file=None)
            try:
                _Runner(client, key or api_key, out, manifest, summary, policy, sleep, timeout,
                        max_consecutive_failures).run(todo, concurrency=concurrency, progress=progress)
            finally:
                if own_client:
                    client.close()
    summary.not_attempted = summary.planned - (summary.already_done + summary.adopted + summary.ok
                                               + summary.refused + summary.failed + summary.capped)
    summary.elapsed_s = time.monotonic() - started
    return summary


class _Runner:
    """The worker pool of one run: requests, retries, saving, counting."""

    def __init__(self, client, api_key: str | None, out: Path, manifest: _Manifest, summary: GenerationSummary,
                 policy: _RetryPolicy, sleep: Callable[[float], None] | None, timeout: float,
                 max_consecutive_failures: int):
        self.client, self.api_key, self.out, self.manifest = client, api_key, out, manifest
        self.summary, self.policy, self.timeout = summary, policy, timeout
        self.max_consecutive_failures = max_consecutive_failures
        self.stop = threading.Event()
        self.sleep = sleep or self.stop.wait       # a stop cuts back-off and rate-limit waits short
        self.lock = threading.Lock()
        self.consecutive_failures = 0
        self.gate_until = 0.0          # monotonic time before which nobody calls (rate limit)
        self.bar = None

    def run(self, todo: Sequence[PlannedImage], *, concurrency: int, progress: bool) -> None:
        if progress:
            self.bar = tqdm(total=len(todo), desc="generating", unit="img", dynamic_ncols=True)
            self._show()
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fakeface-gen")
        futures: dict[Future, PlannedImage] = {}
        try:
            # Submit lazily so a stop leaves the rest un-attempted instead of queued.
            # The first image goes alone: a bad key, missing permission or empty
            # quota then costs one call, not `concurrency` of them.
            for position, item in enumerate(todo):
                while len(futures) >= (1 if position == 1 else concurrency):
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        futures.pop(future)
                        future.result()
                if self.stop.is_set():
                    break
                futures[pool.submit(self._make, item)] = item
            for future in list(futures):
                future.result()
        except KeyboardInterrupt:
            # Requests in flight are paid for: let them finish and be saved, then report.
            self._halt(None, "interrupted (Ctrl-C); every image received was saved; run the same command to continue",
                       kind="interrupted")
            log.warning("interrupted: waiting for the requests in flight to finish and be saved")
            wait(futures)
        except BaseException:
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if self.bar is not None:
                self.bar.close()

    def _show(self) -> None:
        if self.bar is not None:
            s = self.summary
            self.bar.set_postfix(done=s.ok, refused=s.refused, failed=s.failed, refresh=False)

    def _wait_for_gate(self) -> None:
        with self.lock:
            remaining = self.gate_until - time.monotonic()
        if remaining > 0:
            self.sleep(remaining)

    def _make(self, item: PlannedImage) -> None:
        if self.stop.is_set():
            return
        try:
            request = _Request(item.prompt, item.model, item.size, item.quality, dict(item.attributes),
                               _prepare_reference(item.source_path, Path(item.source_path).name)
                               if item.source_path else None)
        except (OSError, ImageDecodeError) as error:
            self._finish(item, "failed", error=RequestRejectedError(
                f"the real image {item.source_path} cannot be used: {error}"))
            return
        attempts = rate_waits = 0
        while True:
            if self.stop.is_set():
                return
            self._wait_for_gate()
            attempts += 1
            with self.lock:
                self.summary.requests += 1
                if attempts > 1:
                    self.summary.retries += 1
            try:
                image = _call_images_api(self.client, request, api_key=self.api_key, timeout=self.timeout)
            except GenerationError as error:
                with self.lock:
                    self.summary.errors[error.kind] += 1
                if error.fatal:
                    self._halt(error)
                    return
                if isinstance(error, ContentRefusedError):
                    self._finish(item, "refused", error=error)
                    return
                if isinstance(error, RateLimitedError) and rate_waits < self.policy.max_rate_limit_waits:
                    rate_waits += 1
                    attempts -= 1              # a rate-limit wait is not a failed attempt
                    delay = min(error.retry_after if error.retry_after is not None
                                else self.policy.default_retry_after_s, self.policy.max_retry_after_s)
                    with self.lock:
                        self.gate_until = max(self.gate_until, time.monotonic() + delay)
                        self.summary.rate_limit_wait_s += delay
                    log.info("rate limited; waiting %.1f s", delay)
                    self.sleep(delay)
                    continue
                if isinstance(error, ServiceUnavailableError) and attempts < self.policy.max_attempts:
                    delay = min(self.policy.backoff_s * 2 ** (attempts - 1), self.policy.max_backoff_s)
                    log.info("%s; retry %d in %.1f s", error.message, attempts, delay)
                    self.sleep(delay)
                    continue
                self._finish(item, "failed", error=error)
                return
            self._save(item, image)
            return

    def _save(self, item: PlannedImage, image: GeneratedImage) -> None:
        name = item.id + image.extension
        # Order is the whole safety story: the file is complete on disk before the
        # line that says it is done, so a kill between the two loses nothing.
        write_atomic(self.out / name, image.data)
        self.manifest.append(_record(item, status="ok", file=name, image=image))
        self._finish(item, "ok")

    def _finish(self, item: PlannedImage, status: str, *, error: GenerationError | None = None) -> None:
        if status != "ok":
            self.manifest.append(_record(item, status=status, error=error))
        with self.lock:
            setattr(self.summary, status, getattr(self.summary, status) + 1)
            self.consecutive_failures = self.consecutive_failures + 1 if status == "failed" else 0
            too_many = self.consecutive_failures >= self.max_consecutive_failures
            if self.bar is not None:
                self.bar.update(1)
                self._show()
        if status == "failed":
            log.warning("image %s failed: %s", item.id, error.message if error else "")
        if too_many:
            self._halt(None, f"{self.max_consecutive_failures} images failed in a row; stopped to save money "
                             f"(last error: {error.message if error else 'unknown'})", kind="too_many_failures")

    def _halt(self, error: GenerationError | None, reason: str | None = None, *, kind: str | None = None) -> None:
        with self.lock:
            if self.summary.stopped is None:
                self.summary.stopped = reason or error.message
                self.summary.stopped_kind = kind or (error.kind if error else "too_many_failures")
        self.stop.set()
