"""One image from the OpenAI images API: a portrait from a prompt, or a look-alike of a real face.

:func:`generate_face` is the app's entry point (a per-request key, one attempt, no
retries); the batch runner calls :func:`call_images_api` with its own retries.
The bytes are kept exactly as the API returned them, so C2PA provenance survives.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fakeface.utils.constants import DEFAULT_IMAGE_MODEL
from fakeface.data.images import load_image
from fakeface.generation.client import (
    DEFAULT_QUALITY, DEFAULT_SIZE, DEFAULT_TIMEOUT_S, InvalidResponseError, check_quality, check_size,
    classify_openai_error, create_openai_client, redact_secrets, resolve_api_key, resolve_image_model,
)
from fakeface.generation.prompts import build_face_prompt, build_lookalike_prompt, validate_attributes

__all__ = ["GeneratedImage", "IMAGE_EXTENSIONS", "ImageRequest", "call_images_api", "generate_face", "prepare_reference"]

# What the API accepts as an edit input without conversion (< 50 MB each).
_EDIT_INPUT_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EDIT_INPUT_MAX_BYTES = 50 * 1024 * 1024
IMAGE_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


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
        return IMAGE_EXTENSIONS.get(self.format, "." + self.format.lower())


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    model: str
    size: str
    quality: str
    attributes: dict[str, str]
    reference: tuple[str, bytes, str] | None = None   # (filename, bytes, mime) for look-alikes


def prepare_reference(source: bytes | str | os.PathLike, name: str = "reference.png") -> tuple[str, bytes, str]:
    """A real face as the edit endpoint accepts it: original bytes if PNG/JPEG/WebP, else PNG."""
    data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
    decoded = load_image(data)      # ImageDecodeError says precisely what is wrong with the file
    if decoded.format in _EDIT_INPUT_FORMATS and len(data) < _EDIT_INPUT_MAX_BYTES:
        return (Path(name).stem + IMAGE_EXTENSIONS[decoded.format], data, _EDIT_INPUT_FORMATS[decoded.format])
    buffer = io.BytesIO()
    decoded.image.save(buffer, format="PNG")
    return (Path(name).stem + ".png", buffer.getvalue(), "image/png")


def call_images_api(client, request: ImageRequest, *, api_key: str | None, timeout: float | None) -> GeneratedImage:
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
    size, quality = check_size(size), check_quality(quality)
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
    reference = prepare_reference(reference_image) if reference_image is not None else None
    request = ImageRequest(text, model, size, quality, attributes, reference)
    if client is not None:
        return call_images_api(client, request, api_key=api_key, timeout=timeout)
    key = resolve_api_key(api_key, env_file=None)
    with create_openai_client(key, base_url=base_url, timeout=timeout, env_file=None) as own_client:
        return call_images_api(own_client, request, api_key=key, timeout=None)
