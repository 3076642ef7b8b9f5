"""A corpus of awkward and hostile image files, generated (no binary blobs in git).

Every entry point that accepts images (app detect / batch / dataset, build_dataset,
evaluate) is run over this corpus by tests/test_hardening.py. Each case says
whether a correct result is expected (``ok``) or a clear, specific refusal
(``error``), with a regex the message (or the result's notes) must match.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from fakeface.utils.constants import MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class Case:
    name: str
    filename: str
    data: bytes
    expect: str           # "ok" or "error"
    match: str = ""       # regex (case-insensitive) for the error message, or for notes when ok


def _face_like(size=(96, 96), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(arr)
    ImageDraw.Draw(image).ellipse((size[0] // 5, size[1] // 6, 4 * size[0] // 5, 5 * size[1] // 6), fill=(220, 180, 150))
    return image.convert(mode) if mode != "RGB" else image


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny file whose header claims a huge image (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_with_corrupt_c2pa() -> bytes:
    """A valid JPEG carrying an APP11 JUMBF segment (where C2PA lives) full of garbage."""
    jpeg = _encode(_face_like(), "JPEG", quality=90)
    payload = b"JP" + b"\x00\x01" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x30jumb" + b"\xde\xad\xbe\xef" * 10
    segment = b"\xff\xeb" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def _animated(fmt: str) -> bytes:
    frames = [_face_like(seed=i) for i in range(3)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated() -> bytes:
    image = _face_like((120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° CW to display
    return _encode(image, "JPEG", exif=exif.tobytes(), quality=92)


def _sixteen_bit() -> bytes:
    arr = (np.random.default_rng(1).integers(0, 65535, (80, 80))).astype(np.uint16)
    return _encode(Image.fromarray(arr, mode="I;16"), "PNG")


def _heic() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return _encode(_face_like(), "HEIF")


def build_corpus() -> list[Case]:
    truncated_png = _encode(_face_like(), "PNG")
    truncated_jpeg = _encode(_face_like(), "JPEG", quality=90)
    cases = [
        Case("zero-bytes", "empty.png", b"", "error", r"empty"),
        Case("text-renamed-png", "notes.png", b"Shopping list:\n- eggs\n- milk\n" * 20, "error", r"not an image|text"),
        Case("html", "page.png", b"<!DOCTYPE html><html><body><h1>hi</h1></body></html>", "error", r"html"),
        Case("truncated-png", "cut.png", truncated_png[: len(truncated_png) // 2], "error", r"truncated|corrupt"),
        Case("truncated-jpeg", "cut.jpg", truncated_jpeg[: len(truncated_jpeg) // 2], "error", r"truncated|corrupt"),
        Case("decompression-bomb", "bomb.png", png_declaring(50_000, 50_000), "error", r"50000|limit|too large|bomb"),
        Case("one-pixel", "dot.png", _encode(Image.new("RGB", (1, 1), "white"), "PNG"), "error", r"too small"),
        Case("sliver-10000x10", "sliver.png", _encode(Image.new("RGB", (10_000, 10), "gray"), "PNG"), "error", r"too small"),
        Case("png-16-bit", "deep.png", _sixteen_bit(), "ok", r"16"),
        Case("cmyk-jpeg", "print.jpg", _encode(_face_like(mode="CMYK"), "JPEG", quality=90), "ok", r"cmyk"),
        Case("palette-transparency", "pal.png", _encode(_face_like().convert("P").copy(), "PNG", transparency=0), "ok"),
        Case("la", "la.png", _encode(_face_like(mode="LA"), "PNG"), "ok"),
        Case("rgba", "rgba.png", _encode(_face_like(mode="RGBA"), "PNG"), "ok"),
        Case("grayscale", "gray.jpg", _encode(_face_like(mode="L"), "JPEG", quality=90), "ok"),
        Case("animated-gif", "anim.gif", _animated("GIF"), "ok", r"first frame"),
        Case("animated-webp", "anim.webp", _animated("WEBP"), "ok", r"first frame"),
        Case("exif-rotated-jpeg", "rotated.jpg", _exif_rotated(), "ok", r"orientation"),
        Case("progressive-jpeg", "prog.jpg", _encode(_face_like(), "JPEG", quality=85, progressive=True), "ok"),
        Case("bmp", "face.bmp", _encode(_face_like(), "BMP"), "ok"),
        Case("tiff", "face.tiff", _encode(_face_like(), "TIFF"), "ok"),
        Case("webp", "face.webp", _encode(_face_like(), "WEBP", quality=90), "ok"),
        Case("avif", "face.avif", _encode(_face_like(), "AVIF"), "ok"),
        Case("heic", "face.heic", _heic(), "ok"),
        Case("svg", "vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', "error", r"svg"),
        Case("pdf", "doc.pdf", b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "error", r"pdf"),
        Case("corrupt-c2pa", "c2pa.jpg", jpeg_with_corrupt_c2pa(), "ok"),
    ]
    return cases


def oversized_upload() -> Case:
    """A file over the upload limit (kept separate: it is big, built only where needed)."""
    return Case("over-upload-limit", "huge.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (MAX_UPLOAD_BYTES + 1024), "error",
                r"too large|limit|exceeds")
