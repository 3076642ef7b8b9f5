"""Safe decoding of untrusted image bytes: the one door every image comes through.

Dataset building, training, evaluation and the app all call :func:`load_image`,
so an image is decoded, oriented and converted to RGB the same way everywhere.
Hostile or odd files get a specific :class:`ImageDecodeError` (empty, not an
image and what it is instead, truncated, decompression bomb, unsupported format,
too small); odd-but-valid ones are normalised and say so in ``notes``.

Pillow's global ``Image.MAX_IMAGE_PIXELS`` is never touched: our own limit is
stricter and is checked on the declared size before any pixel is decoded.

Pillow reads every header (so all metadata); the pixels of a plain still PNG
are decoded by libspng (``pyspng``), in 60 % of the time, into exactly the image
Pillow would give. Everything else, and any machine without pyspng, Pillow decodes.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from fakeface.data.png_chunks import png_metadata_image, still_png_chunks
from fakeface.utils.constants import MAX_IMAGE_PIXELS

try:  # libspng: PNG pixels in ~60 % of Pillow's time; without it Pillow decodes them (same pixels)
    import pyspng
except ImportError:  # pragma: no cover - pinned in requirements.txt; tests/test_decode.py hides it
    pyspng = None

pillow_heif.register_heif_opener()   # HEIC/HEIF (iPhone photos); AVIF is read by Pillow itself

__all__ = [
    "DEFAULT_MIN_SIDE", "DecodedImage", "ImageDecodeError", "SAFE_FORMATS",
    "estimate_jpeg_quality", "format_decode_notes", "load_image", "read_image_facts",
]

DEFAULT_MIN_SIDE = 16

# Only these plugins may parse untrusted bytes. Pillow can open far more (EPS
# even runs Ghostscript on load); the rest are refused as unsupported.
SAFE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "AVIF", "HEIF", "PPM")

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}

# IJG reference quantization tables (natural order), which libjpeg scales by quality.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)
_STD_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
], dtype=np.float64)


class ImageDecodeError(ValueError):
    """An image could not be used; the message is specific and safe to show to a user."""


@dataclass
class DecodedImage:
    """A fully decoded RGB image and what was done to get it.

    ``width``/``height`` are the image's true dimensions after EXIF orientation;
    ``image.size`` equals them unless ``draft_size`` asked for a reduced JPEG decode.
    """

    image: Image.Image
    format: str
    width: int
    height: int
    original_mode: str
    notes: list[str] = field(default_factory=list)
    jpeg_quality: int | None = None
    decoder: str = "Pillow"   # who decoded the pixels: "Pillow" or "libspng" (identical results either way)


# --------------------------------------------------------------------------- sniffing

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _magic_format(data: bytes) -> str | None:
    """The image format the leading bytes announce, if any (even when the rest is broken)."""
    for magic, name in _IMAGE_MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"
    return None


def _describe_non_image(data: bytes) -> str:
    """What a file that is not a raster image looks like it is, for the error message."""
    head = data[:2048]
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%PDF"):
        return "a PDF document, not an image"
    if b"<svg" in lowered:
        return "an SVG vector drawing; only raster images (PNG, JPEG, WebP, ...) are accepted"
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:512]:
        return "an HTML page, not an image"
    if lowered.startswith(b"<?xml"):
        return "an XML document, not an image"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive, not an image"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive, not an image"
    if head.startswith((b"\x7fELF", b"MZ")):
        return "an executable program, not an image"
    if head[4:8] == b"ftyp":
        return "a video or non-image ISO media file (brand " + head[8:12].decode("latin-1", "replace") + ")"
    if head.startswith(b"%!PS"):
        return "a PostScript/EPS document; only raster images (PNG, JPEG, WebP, ...) are accepted"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            if lowered.startswith((b"{", b"[")):
                return "a text file (JSON), not an image"
            return "a text file, not an image"
    return "not an image in a recognised format"


# --------------------------------------------------------------------------- opening

def _read_source(source: bytes | bytearray | memoryview | str | os.PathLike, max_bytes: int | None) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise ImageDecodeError(
                    f"the file is too large: {size / 2**20:.1f} MiB, limit {max_bytes / 2**20:.0f} MiB"
                )
            data = path.read_bytes()
        except ImageDecodeError:
            raise
        except IsADirectoryError as error:
            raise ImageDecodeError("cannot read the file: it is a folder") from error
        except OSError as error:
            raise ImageDecodeError(f"cannot read the file ({error.strerror or type(error).__name__})") from error
    else:
        raise TypeError(f"load_image takes bytes or a path, not {type(source).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageDecodeError(f"the file is too large: {len(data) / 2**20:.1f} MiB, limit {max_bytes / 2**20:.0f} MiB")
    return data


def _open_without_bomb_check(data: bytes) -> Image.Image | None:
    """Open a header whose size Pillow refused, only to read the declared size for the message."""
    prefix = data[:16]
    for fmt in _registered_safe_formats():
        entry = Image.OPEN.get(fmt)
        if entry is None:
            continue
        factory, accept = entry
        try:
            if accept is None or accept(prefix):
                return factory(io.BytesIO(data), "")
        except Exception:  # noqa: BLE001 - any failure just means "not this plugin"
            continue
    return None


def _registered_safe_formats() -> list[str]:
    Image.init()
    return [fmt for fmt in SAFE_FORMATS if fmt in Image.OPEN]


def _open(data: bytes) -> Image.Image:
    """``Image.open`` restricted to :data:`SAFE_FORMATS`, with every failure turned into a clear reason."""
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    try:
        return Image.open(io.BytesIO(data), formats=_registered_safe_formats())
    except Image.DecompressionBombError:
        im = _open_without_bomb_check(data)
        if im is None:
            raise ImageDecodeError("the image declares too many pixels: refused as a possible decompression bomb") from None
        return im
    except UnidentifiedImageError:
        pass
    except Exception as error:  # noqa: BLE001 - Pillow raises many types on broken headers
        fmt = _magic_format(data) or "image"
        raise ImageDecodeError(f"corrupt {fmt} file: its header cannot be read ({_short(error)})") from None
    magic = _magic_format(data)
    if magic in ("AVIF", "HEIF") and magic not in _registered_safe_formats():
        raise ImageDecodeError(f"unsupported format {magic}: no decoder for it is installed")
    if magic is not None:
        raise ImageDecodeError(f"corrupt or truncated {magic} file: its header cannot be read")
    try:  # a format Pillow knows but we do not accept: name it
        with Image.open(io.BytesIO(data)) as other:
            name = other.format
        raise ImageDecodeError(f"unsupported format {name}; use PNG, JPEG, WebP, GIF, BMP, TIFF, AVIF or HEIC")
    except ImageDecodeError:
        raise
    except Exception:  # noqa: BLE001
        pass
    raise ImageDecodeError(_describe_non_image(data))


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e9:.1f} GP" if pixels >= 1e9 else f"{pixels / 1e6:.0f} MP" if pixels >= 1e6 else f"{pixels} px"


def _frame_count(im: Image.Image) -> int:
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001 - a broken later frame does not matter: we use the first
        return 1


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - corrupt EXIF is ignored, the pixels are still fine
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _is_16_bit(im: Image.Image) -> bool:
    if im.mode.startswith("I;16"):
        return True
    for tile in getattr(im, "tile", None) or ():
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


# --------------------------------------------------------------------------- public API

def read_image_facts(source: bytes | str | os.PathLike) -> dict[str, Any]:
    """Header-only facts: format, width, height, mode, frames, EXIF orientation; no pixel decoding.

    Raises :class:`ImageDecodeError` when the bytes are not an image at all.
    """
    data = _read_source(source, None)
    im = _open(data)
    try:
        return {
            "format": im.format, "width": im.size[0], "height": im.size[1], "mode": im.mode,
            "frames": _frame_count(im), "orientation": _orientation(_metadata_only(im, data)),
        }
    finally:
        im.close()


def _metadata_only(im: Image.Image, data: bytes) -> Image.Image:
    """``im``, or for a PNG an image with its metadata only: a PNG's ``getexif()`` would decode every pixel.

    All of a well-formed still PNG's chunks are read (those after the pixels too, as Pillow's decode
    would); of any other PNG (animated, cut, a bad CRC), the header's.
    """
    if im.format != "PNG":
        return im
    meta = png_metadata_image(data)
    if meta is None:
        meta = Image.new("1", (1, 1))
        meta.info = dict(im.info)   # what a plain Image's getexif() reads
    return meta


def estimate_jpeg_quality(quantization: dict[int, Any] | None) -> int | None:
    """libjpeg-equivalent quality (1-100) of a JPEG's quantization tables, or None if there are none.

    The tables are compared with the IJG reference tables scaled to each quality;
    encoders with their own tables (cameras, Photoshop) get the nearest match.
    """
    if not quantization or 0 not in quantization:
        return None
    luma = np.asarray(quantization[0], dtype=np.float64)
    chroma = np.asarray(quantization[1], dtype=np.float64) if 1 in quantization else None
    if luma.size != 64 or (chroma is not None and chroma.size != 64):
        return None
    qualities = np.arange(1, 101)
    scale = np.where(qualities < 50, 5000.0 / qualities, 200.0 - 2.0 * qualities)[:, None]  # (100, 1)
    error = np.abs(np.clip(np.floor((_STD_LUMA * scale + 50) / 100), 1, 255) - luma).sum(axis=1)
    if chroma is not None:
        error += np.abs(np.clip(np.floor((_STD_CHROMA * scale + 50) / 100), 1, 255) - chroma).sum(axis=1)
    return int(qualities[int(np.argmin(error))])


def load_image(
    source: bytes | bytearray | memoryview | str | os.PathLike,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    max_bytes: int | None = None,
    draft_size: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode untrusted bytes (or a file) into a fully loaded RGB image, or raise :class:`ImageDecodeError`.

    The declared size is checked against ``max_pixels`` and ``min_side`` before
    any pixel is decoded. Animations give their first frame; EXIF orientation is
    applied; 16-bit, CMYK, palette, grey and alpha images become 8-bit RGB (alpha
    flattened on white). ``draft_size`` lets JPEGs decode at a reduced scale no
    smaller than that size (fast path); other formats ignore it.
    """
    data = _read_source(source, max_bytes)
    im = _open(data)
    try:
        decoded = _decode(im, data, max_pixels=max_pixels, min_side=min_side, draft_size=draft_size)
    except BaseException:
        im.close()
        raise
    if decoded.image is not im:  # an RGB file decodes to itself: closing it would free the pixels
        im.close()
    return decoded


def _decode(im: Image.Image, data: bytes, *, max_pixels: int, min_side: int,
            draft_size: tuple[int, int] | None) -> DecodedImage:
    fmt = im.format or _magic_format(data) or "unknown"
    width, height = im.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"the image declares {width}×{height} = {_megapixels(width * height)}, over the limit of "
            f"{_megapixels(max_pixels)}: refused as a possible decompression bomb"
        )
    if min(width, height) < min_side:
        raise ImageDecodeError(f"the image is too small: {width}×{height} px, each side must be at least {min_side} px")

    notes: list[str] = []
    original_mode = im.mode
    frames = _frame_count(im)
    if frames > 1:
        im.seek(0)
        notes.append(f"first frame of {frames}-frame animated {fmt}")
    sixteen_bit = _is_16_bit(im)   # from the header's tile, which Pillow empties once it has decoded
    # Before any EXIF look-up: a PNG's getexif() makes Pillow decode all its pixels when no eXIf
    # chunk precedes them, which would be the very decode libspng is here to do faster.
    fast = _decode_png_with_libspng(im, data) if fmt == "PNG" and frames == 1 else None
    orientation = _orientation(im if fast is None else fast)
    quality = estimate_jpeg_quality(getattr(im, "quantization", None)) if fmt in ("JPEG", "MPO") else None

    if fast is not None:
        im = fast   # the header image is closed by load_image
    else:
        _load_with_pillow(im, fmt, orientation, draft_size)

    if im.size != (width, height):
        notes.append(f"JPEG decoded at reduced scale {im.size[0]}×{im.size[1]} (draft)")
    if orientation is not None and orientation != 1:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not lose a good image
            notes.append("EXIF orientation could not be applied (corrupt EXIF)")
        else:
            notes.append(f"EXIF orientation applied (tag value {orientation})")
            if orientation in (5, 6, 7, 8):
                width, height = height, width

    rgb = _to_rgb(im, notes, sixteen_bit=sixteen_bit, fmt=fmt)
    rgb.load()
    return DecodedImage(rgb, fmt, width, height, original_mode, notes, quality,
                        decoder="Pillow" if fast is None else "libspng")


def _load_with_pillow(im: Image.Image, fmt: str, orientation: int | None, draft_size: tuple[int, int] | None) -> None:
    if draft_size is not None and fmt in ("JPEG", "MPO"):
        want = tuple(draft_size) if orientation not in (5, 6, 7, 8) else (draft_size[1], draft_size[0])
        im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else "RGB", want)
    try:
        im.load()
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, EOFError...
        reason = _short(error)
        kind = "truncated" if "truncated" in reason.lower() else "corrupt"
        raise ImageDecodeError(f"{kind} {fmt} file: decoding failed ({reason})") from None


# --------------------------------------------------------------------------- PNG pixels through libspng

# (colour type, bit depth) -> (pyspng output format, channels kept): then the array is what Pillow's
# load() holds, in the header's mode (but see _SPNG_MODE). tests/test_decode.py checks every entry.
_SPNG_LAYOUTS: dict[tuple[int, int], tuple[str | None, Any]] = {
    **{(0, depth): ("L", None) for depth in (1, 2, 4, 8)},      # low depths scaled up, as Pillow does
    (0, 16): (None, 0),            # pyspng has no 16-bit grey output: its grey+alpha, alpha dropped
    (2, 8): ("RGB", None), (2, 16): ("RGB", None),   # 16 bit: libspng keeps the high byte, as Pillow does
    **{(3, depth): ("RGB", None) for depth in (1, 2, 4, 8)},    # palette looked up (no tRNS: see below)
    (4, 8): ("RGBA", (0, 3)),      # libspng has no grey+alpha output for grey+alpha input
    (4, 16): ("RGBA", None), (6, 8): ("RGBA", None), (6, 16): ("RGBA", None),   # Pillow: 16-bit LA is RGBA
}
# Header mode -> mode of the libspng image where they differ: their conversions to RGB are identical.
_SPNG_MODE = {"P": "RGB", "1": "L"}


def _png_plain_layout(data: bytes) -> tuple[int, int] | None:
    """(colour type, bit depth) of a still PNG whose IDAT chunks run straight into a whole IEND, else None.

    Pillow reads chunks after the pixels (text, eXIf, ...) into ``info`` only while decoding, and APNG
    frames only itself: those, and cut files, stay with Pillow (same metadata, same errors). So do
    files with a wrong CRC (0.3 ms per 1.4 MB): pyspng makes libspng skip CRC and zlib checksums, and
    where a damaged stream fails its checksum Pillow blanks the last rows, libspng keeps them.
    """
    parts = still_png_chunks(data)
    return (data[25], data[24]) if parts is not None and not parts[2] else None


def _decode_png_with_libspng(im: Image.Image, data: bytes) -> Image.Image | None:
    """The image Pillow's load() would give (mode, pixels, ``info``), decoded by libspng; None: use Pillow.

    Called only once the declared size has passed the pixel limits.
    """
    layout = _png_plain_layout(data) if pyspng is not None else None
    spec = _SPNG_LAYOUTS.get(layout) if layout is not None else None
    # pyspng cannot ask libspng to apply a palette's tRNS alpha, and Pillow would: Pillow decodes those.
    if spec is None or (im.mode == "P" and "transparency" in im.info):
        return None
    output, channels = spec
    try:
        pixels = pyspng.load(data, output)
    except Exception:  # noqa: BLE001 - broken pixel data: Pillow decodes it again and words the error
        return None
    fast = Image.fromarray(pixels if channels is None else pixels[..., channels])
    if fast.size != im.size or fast.mode != _SPNG_MODE.get(im.mode, im.mode):
        return None   # a layout Pillow reads differently from this table: never guess
    fast.info = dict(im.info)   # transparency, ICC, EXIF...: what _to_rgb and exif_transpose read
    return fast


def _to_rgb(im: Image.Image, notes: list[str], *, sixteen_bit: bool, fmt: str) -> Image.Image:
    """8-bit RGB, with the reason for each non-trivial conversion noted."""
    mode = im.mode
    if mode == "RGB":
        if sixteen_bit:
            notes.append(f"16-bit {fmt} converted to 8-bit")
        if "transparency" in im.info:
            return _flatten_alpha(im.convert("RGBA"), notes)
        return im
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(im), mode, notes, fmt)).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
        return im.convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return _flatten_alpha(im.convert("RGBA"), notes)
    if mode in ("L", "1"):
        notes.append("grayscale converted to RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageDecodeError(f"unsupported colour mode {mode} ({_short(error)})") from None


def _to_uint8(arr: np.ndarray, mode: str, notes: list[str], fmt: str) -> np.ndarray:
    """Scale 16/32-bit integer or float pixels into 0..255 (rescaling the range, never clipping it)."""
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        notes.append(f"16-bit {fmt} converted to 8-bit")
        scaled = arr / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        notes.append(f"floating-point {fmt} converted to 8-bit")
        scaled = arr * 255.0
    else:
        notes.append(f"{mode} {fmt} with values {lo:g}..{hi:g} rescaled to 8-bit")
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten_alpha(rgba: Image.Image, notes: list[str]) -> Image.Image:
    alpha_min, _ = rgba.getchannel("A").getextrema()
    if alpha_min == 255:
        return rgba.convert("RGB")
    notes.append("alpha flattened on white")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def format_decode_notes(decoded: DecodedImage) -> str:
    """One line for logs and UIs: ``PNG 1024×1024 (EXIF orientation applied; ...)``."""
    base = f"{decoded.format} {decoded.width}×{decoded.height}"
    if decoded.jpeg_quality is not None:
        base += f" q≈{decoded.jpeg_quality}"
    return base + (f" ({'; '.join(decoded.notes)})" if decoded.notes else "")

