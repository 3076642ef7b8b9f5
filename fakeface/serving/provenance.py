"""What the file itself says about where it came from: C2PA, EXIF, PNG text chunks.

Read from the *original bytes* (a re-encoded copy has lost all of it). None
of this is proof either way: credentials and metadata are stripped by almost
every re-save, screenshot and upload, and EXIF or text chunks can be written
by anyone. A valid C2PA manifest is different in kind: it is signed, and
binds its claims (e.g. "created by a generative AI model") to these exact
bytes, so editing the pixels breaks it.

:func:`read_provenance` never raises on bad input: a corrupt manifest is
reported as "present but invalid", unreadable metadata as absent.
"""
from __future__ import annotations

import io
import logging
import re
from typing import Any

from PIL import ExifTags, Image

from fakeface.utils.constants import MAX_IMAGE_PIXELS
from fakeface.data.images import SAFE_FORMATS
from fakeface.data.png_chunks import png_metadata_image

logger = logging.getLogger(__name__)

try:  # optional: without it the panel says C2PA could not be checked
    import c2pa

    C2PA_AVAILABLE = True
except ImportError:  # pragma: no cover - c2pa-python is pinned in requirements.txt
    c2pa = None
    C2PA_AVAILABLE = False

__all__ = ["C2PA_AVAILABLE", "NO_CREDENTIALS_NOTE", "read_c2pa", "read_exif", "read_provenance", "read_text_chunks"]

NO_CREDENTIALS_NOTE = (
    "No C2PA content credentials found. This proves nothing either way: most cameras, phones and "
    "apps do not add them, and re-saving, screenshots and social media strip them."
)

# Pillow format name -> the MIME type c2pa reads. Formats missing here
# (BMP, PPM, ...) cannot carry C2PA manifests at all.
_C2PA_MIME = {
    "PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp",
    "GIF": "image/gif", "TIFF": "image/tiff", "AVIF": "image/avif", "HEIF": "image/heif",
}

# Never fetch anything while reading an untrusted upload: no remote
# manifests, no OCSP. The app must not make network calls on a user's behalf.
_C2PA_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}

# IPTC digital source types (the vocabulary C2PA actions use).
_SOURCE_TYPES = {
    "trainedAlgorithmicMedia": "created by a generative AI model",
    "compositeWithTrainedAlgorithmicMedia": "edited or composited with generative AI",
    "algorithmicallyEnhanced": "algorithmically enhanced",
    "algorithmicMedia": "created by an algorithm (not a trained model)",
    "compositeSynthetic": "composite including synthetic elements",
    "digitalCapture": "captured by a camera",
    "computationalCapture": "captured by a camera with computational processing",
    "negativeFilm": "scanned from a film negative",
    "positiveFilm": "scanned from film",
    "print": "scanned from a print",
    "minorHumanEdits": "captured, with minor human edits",
    "humanEdits": "edited by a person",
    "compositeCapture": "composite of captured images",
    "screenCapture": "a screen capture",
    "digitalArt": "digital art made by a person",
    "virtualRecording": "a recording of a virtual environment",
    "dataDrivenMedia": "created from data",
    "composite": "a composite",
}
_AI_SOURCE_TYPES = {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"}
_SOURCE_TYPE_RE = re.compile(r"digitalsourcetype/([A-Za-z]+)", re.IGNORECASE)

# EXIF fields shown to the user, (IFD, tag, label). Serial numbers, owner
# names and GPS coordinates are deliberately left out of the panel.
_EXIF_FIELDS = (
    (None, 0x010F, "Camera make"),
    (None, 0x0110, "Camera model"),
    (ExifTags.IFD.Exif, 0xA434, "Lens"),
    (ExifTags.IFD.Exif, 0x9003, "Taken"),
    (None, 0x0132, "Modified"),
    (None, 0x0131, "Software"),
    (ExifTags.IFD.Exif, 0x829A, "Exposure"),
    (ExifTags.IFD.Exif, 0x829D, "F-number"),
    (ExifTags.IFD.Exif, 0x8827, "ISO"),
    (ExifTags.IFD.Exif, 0x920A, "Focal length"),
)
_GPS_IFD_TAG = 0x8825

# Text-chunk keys and software names that image generators are known to write.
_GENERATOR_CHUNKS = {
    "parameters": "Stable Diffusion WebUI (A1111/Forge) generation parameters",
    "prompt": "ComfyUI prompt graph",
    "workflow": "ComfyUI workflow",
    "invokeai_metadata": "InvokeAI generation metadata",
    "sd-metadata": "InvokeAI generation metadata",
    "dream": "InvokeAI (Dream) generation metadata",
    "negative_prompt": "diffusion-model prompt",
}
_GENERATOR_SOFTWARE = (
    "stable diffusion", "midjourney", "dall-e", "dall·e", "openai", "gpt-image", "chatgpt", "firefly",
    "novelai", "comfyui", "invokeai", "automatic1111", "imagen", "gemini", "flux", "leonardo", "ideogram",
)
_MAX_TEXT_CHARS = 4000
_MAX_TEXT_CHUNKS = 24


def _short(text: Any, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _open(data: bytes) -> Image.Image | None:
    """Open the header only (restricted to the formats :mod:`fakeface.data.images` accepts)."""
    try:
        return Image.open(io.BytesIO(data), formats=SAFE_FORMATS)
    except Exception:  # noqa: BLE001 - not an image: there is no metadata to read
        return None


# --------------------------------------------------------------------------- C2PA

def _agent_name(agent: Any) -> str | None:
    if isinstance(agent, dict):
        name, version = agent.get("name"), agent.get("version")
        return f"{name} {version}" if name and version else name
    return str(agent) if agent else None


def _source_type_key(value: Any) -> str | None:
    if not value:
        return None
    return str(value).rstrip("/").rsplit("/", 1)[-1]


def _describe_manifest(manifest: dict) -> dict[str, Any]:
    """The parts of an active manifest a person can judge: who signed, what made it, how."""
    signature = manifest.get("signature_info") or {}
    generators = [g for g in (_agent_name(i) for i in manifest.get("claim_generator_info") or []) if g]
    if not generators and manifest.get("claim_generator"):
        generators = [str(manifest["claim_generator"])]
    actions, agents, source_types = [], [], []
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            actions.append(str(action.get("action", "")).removeprefix("c2pa."))
            agent = _agent_name(action.get("softwareAgent"))
            if agent and agent not in agents:
                agents.append(agent)
            key = _source_type_key(action.get("digitalSourceType"))
            if key and key not in source_types:
                source_types.append(key)
    return {
        "issuer": signature.get("issuer"),
        "signer": signature.get("common_name"),
        "signed_at": signature.get("time"),
        "claim_generator": ", ".join(generators) or None,
        "software_agents": agents,
        "actions": actions,
        "source_types": [_SOURCE_TYPES.get(k, k) for k in source_types],
        "ai_generated": bool(set(source_types) & _AI_SOURCE_TYPES) if source_types else None,
        "title": manifest.get("title"),
        "ingredients": len(manifest.get("ingredients") or []),
    }


def _validation_problems(results: dict | None) -> list[str]:
    failures = ((results or {}).get("activeManifest") or {}).get("failure") or []
    return [_short(f.get("explanation") or f.get("code")) for f in failures if f.get("code") != "signingCredential.untrusted"]


def _untrusted(results: dict | None) -> bool:
    failures = ((results or {}).get("activeManifest") or {}).get("failure") or []
    return any(f.get("code") == "signingCredential.untrusted" for f in failures)


def read_c2pa(data: bytes, image_format: str | None) -> dict[str, Any]:
    """C2PA content credentials of ``data``: status, signer, generator claims, validation state.

    ``status`` is one of ``none`` (no manifest), ``valid`` (signature and
    hashes check out), ``trusted`` (and the signer is on the trust list),
    ``invalid`` (present but broken or tampered), ``unsupported`` (this file
    type cannot carry a manifest), ``unavailable`` (c2pa-python missing) or
    ``error`` (the reader failed for another reason). ``summary`` says it in
    words.
    """
    result: dict[str, Any] = {"status": "none", "summary": NO_CREDENTIALS_NOTE, "validation_state": None, "problems": []}
    if not C2PA_AVAILABLE:
        return {**result, "status": "unavailable", "summary": "C2PA not checked: c2pa-python is not installed."}
    mime = _C2PA_MIME.get((image_format or "").upper())
    if mime is None:
        what = f"{image_format} files cannot carry content credentials" if image_format else "the file type is not known"
        return {**result, "status": "unsupported", "summary": f"C2PA not checked: {what}."}
    reader = None
    try:
        context = c2pa.Context.from_dict(_C2PA_SETTINGS)
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, context)
        if reader is None:
            return result
        manifest = reader.get_active_manifest() or {}
        state = reader.get_validation_state()
        results = reader.get_validation_results()
    except Exception as error:  # noqa: BLE001 - any reader failure on bytes that claim a manifest
        reason = _short(getattr(error, "message", None) or error or type(error).__name__, 200)
        if c2pa is not None and isinstance(error, c2pa.C2paError.RemoteManifest):
            return {**result, "status": "remote",
                    "summary": f"C2PA manifest is stored remotely and was not fetched ({reason})."}
        if c2pa is not None and isinstance(error, c2pa.C2paError.NotSupported):
            return {**result, "status": "unsupported", "summary": f"C2PA not checked: {reason}."}
        return {**result, "status": "invalid", "validation_state": "Invalid", "problems": [reason],
                "summary": f"C2PA manifest present but invalid: {reason}"}
    finally:
        if reader is not None:
            try:
                reader.close()
            except Exception:  # noqa: BLE001
                pass

    described = _describe_manifest(manifest)
    problems = _validation_problems(results)
    result.update(described, validation_state=state, problems=problems)
    who = described["issuer"] or described["signer"] or "an unknown signer"
    if state == "Invalid" or problems:
        result["status"] = "invalid"
        result["summary"] = f"C2PA manifest present but invalid: {'; '.join(problems) or 'validation failed'}"
        return result
    result["status"] = "trusted" if state == "Trusted" else "valid"
    claim = ""
    if described["ai_generated"]:
        claim = " It declares the image " + described["source_types"][0] + "."
    elif described["source_types"]:
        claim = " It declares the image " + described["source_types"][0] + "."
    trust = "" if state == "Trusted" or not _untrusted(results) else " (the signer is not on the C2PA trust list)"
    result["summary"] = f"Valid C2PA content credentials signed by {who}{trust}.{claim}"
    return result


# --------------------------------------------------------------------------- EXIF and text chunks

def _format_exif_value(label: str, value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace").strip("\x00 ")
    if label == "Exposure":
        try:
            seconds = float(value)
            return f"1/{round(1 / seconds)} s" if 0 < seconds < 1 else f"{seconds:g} s"
        except (TypeError, ValueError, ZeroDivisionError):
            pass
    if label == "F-number":
        try:
            return f"f/{float(value):.1f}"
        except (TypeError, ValueError):
            pass
    if label == "Focal length":
        try:
            return f"{float(value):g} mm"
        except (TypeError, ValueError):
            pass
    if isinstance(value, tuple):
        value = ", ".join(str(v) for v in value)
    return _short(value, 120)


def read_exif(image: Image.Image) -> dict[str, str]:
    """Camera-related EXIF fields (make, model, lens, time, exposure, software), as display strings.

    GPS coordinates are never returned; their presence is noted as
    ``"GPS location": "present (not shown)"``.
    """
    try:
        exif = image.getexif()
    except Exception:  # noqa: BLE001 - corrupt EXIF: treat as none
        return {}
    fields: dict[str, str] = {}
    ifds: dict[Any, Any] = {None: exif}
    for ifd, tag, label in _EXIF_FIELDS:
        try:
            if ifd not in ifds:
                ifds[ifd] = exif.get_ifd(ifd)
            value = ifds[ifd].get(tag)
        except Exception:  # noqa: BLE001 - one broken sub-IFD must not hide the rest
            continue
        if value not in (None, "", b""):
            text = _format_exif_value(label, value)
            if text:
                fields[label] = text
    try:
        if exif.get(_GPS_IFD_TAG) is not None or exif.get_ifd(ExifTags.IFD.GPSInfo):
            fields["GPS location"] = "present (not shown)"
    except Exception:  # noqa: BLE001
        pass
    return fields


def read_text_chunks(image: Image.Image) -> dict[str, str]:
    """Text metadata: PNG tEXt/zTXt/iTXt chunks (e.g. Stable Diffusion ``parameters``), comments.

    Values are truncated to a few thousand characters; XMP and ICC profiles
    are not text chunks and are left out.
    """
    chunks: dict[str, Any] = {}
    if image.format == "PNG":
        # PngImageFile.text reads chunks after IDAT too, which decodes the pixels:
        # only do that for images within the pixel limit.
        if image.size[0] * image.size[1] <= MAX_IMAGE_PIXELS:
            try:
                chunks = dict(image.text)
            except Exception:  # noqa: BLE001 - truncated file: fall back to what the header had
                chunks = {}
        if not chunks:
            chunks = {k: v for k, v in image.info.items() if isinstance(v, str)}
    else:
        comment = image.info.get("comment")
        if comment:
            chunks["comment"] = comment
    text: dict[str, str] = {}
    for key, value in list(chunks.items())[:_MAX_TEXT_CHUNKS]:
        if key in ("XML:com.adobe.xmp", "icc_profile", "exif"):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        value = str(value)
        text[str(key)] = value if len(value) <= _MAX_TEXT_CHARS else value[:_MAX_TEXT_CHARS] + "…"
    return text


def _xmp_text(image: Image.Image) -> str:
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    return str(xmp)


def _generator_hints(exif: dict[str, str], text: dict[str, str], xmp: str) -> list[str]:
    hints = []
    for key in text:
        meaning = _GENERATOR_CHUNKS.get(key.lower())
        if meaning:
            hints.append(f"text chunk '{key}': {meaning}")
    for key, value in list(exif.items()) + [(k, v) for k, v in text.items() if k.lower() in ("software", "source", "comment")]:
        lowered = value.lower()
        for name in _GENERATOR_SOFTWARE:
            if name in lowered:
                hints.append(f"{key} mentions '{name}': {_short(value, 80)}")
                break
    for key in dict.fromkeys(_SOURCE_TYPE_RE.findall(xmp)):
        if key in _SOURCE_TYPES:
            hints.append(f"XMP digital source type: {_SOURCE_TYPES[key]}")
    return hints


# --------------------------------------------------------------------------- everything

def read_provenance(data: bytes, *, image_format: str | None = None) -> dict[str, Any]:
    """C2PA credentials, EXIF camera fields, text chunks and generator hints of an image file.

    ``image_format`` (Pillow's name, e.g. ``"PNG"``) is sniffed from the
    bytes when not given. Never raises: what cannot be read is reported as
    absent (or, for C2PA, as invalid). ``summary`` lists one sentence per
    finding, in the order a person should read them.

    No pixel is decoded: a PNG's chunks after its pixel data (which Pillow
    reads only while decoding them) come from
    :func:`fakeface.data.png_chunks.png_metadata_image`, with what a full
    decode would read; only a PNG it cannot vouch for (animated, cut, a bad
    CRC) is still decoded to find them.
    """
    image = _open(data)
    image_format = image_format or (image.format if image is not None else None)
    credentials = read_c2pa(data, image_format)
    exif, text, xmp = {}, {}, ""
    if image is not None:
        try:
            meta = png_metadata_image(data) if image.format == "PNG" else None   # the pixels are decoded once, elsewhere
            source = image if meta is None else meta
            exif = read_exif(source)
            text = read_text_chunks(source)
            xmp = _xmp_text(source)
        except Exception as error:  # noqa: BLE001 - metadata is optional; never lose the verdict over it
            logger.info("metadata of an upload could not be read: %s", type(error).__name__)
        finally:
            image.close()
    hints = _generator_hints(exif, text, xmp)
    summary = [credentials["summary"]]
    if exif:
        camera = " ".join(v for k, v in exif.items() if k in ("Camera make", "Camera model"))
        summary.append(f"EXIF: {camera or 'camera fields'} ({len(exif)} field(s)). EXIF can be written by any program.")
    else:
        summary.append("No EXIF camera data (common for generated images, but also for screenshots and most uploads).")
    if text:
        summary.append(f"Text metadata: {', '.join(list(text)[:6])}.")
    summary.extend(f"Generator hint: {h}." for h in hints)
    return {
        "format": image_format,
        "c2pa": credentials,
        "exif": exif,
        "text_chunks": text,
        "generator_hints": hints,
        "summary": summary,
    }

