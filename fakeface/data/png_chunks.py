"""A PNG's chunks, walked without decoding a pixel: whether libspng may decode it, and its metadata.

Pillow reads the chunks after a PNG's pixel data (text, ``eXIf``, ...) only
while it decodes the pixels, so asking a lazily opened PNG for its EXIF or
text costs a full decode. :func:`png_metadata_image` gives the same metadata
for the cost of one pixel: a 1×1 PNG holding every chunk of the file but its
pixel data, which Pillow reads with its own chunk handlers, in the same order.
"""
from __future__ import annotations

import io
import struct
import zlib
from typing import NamedTuple

from PIL import Image

__all__ = ["Chunk", "png_metadata_image", "still_png_chunks"]

# A real PNG has a few hundred chunks (8 KiB IDATs: 512 MiB at this count); a file of empty chunks is
# refused after at most ~55 ms of walking rather than the ~2 s its 25 MiB of 12-byte chunks would take.
MAX_PNG_CHUNKS = 65_536
_ANIMATION = frozenset({b"acTL", b"fcTL", b"fdAT"})
# After the pixel data these would be read differently from a header (or are not metadata at all).
_PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT"})
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}     # colour type -> samples per pixel


class Chunk(NamedTuple):
    kind: bytes
    start: int     # offset of its length field
    end: int       # offset just past its CRC


def _walk(data: bytes) -> list[Chunk] | None:
    """Every chunk from IHDR to IEND, each whole and with a good CRC; None for anything else."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    view, pos, chunks = memoryview(data), 8, []
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 12 > len(data):
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(view[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        chunks.append(Chunk(kind, pos, end))
        if kind == b"IEND":
            return chunks
        pos = end
    return None


def still_png_chunks(data: bytes) -> tuple[list[Chunk], list[Chunk], list[Chunk]] | None:
    """(before, pixels, after) of a whole still PNG: the chunks before its one run of IDAT chunks, the run,
    and those after it (IEND left out). None for an APNG, a cut file, a bad CRC or IDATs in two runs."""
    chunks = _walk(data)
    if chunks is None or any(c.kind in _ANIMATION for c in chunks):
        return None
    kinds = [c.kind for c in chunks]
    if b"IDAT" not in kinds:
        return None
    first = last = kinds.index(b"IDAT")
    while kinds[last + 1] == b"IDAT":   # the last chunk is IEND: the run ends before it
        last += 1
    after = chunks[last + 1:-1]
    if any(c.kind == b"IDAT" for c in after):
        return None
    return chunks[:first], chunks[first:last + 1], after


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_metadata_image(data: bytes) -> Image.Image | None:
    """A loaded 1×1 PNG whose ``info``, ``text`` and ``getexif()`` are those Pillow gives ``data`` once it has
    decoded all of its pixels; None when only that decode can tell (an APNG, a cut file, a bad CRC, pixel
    chunks after the pixel data, or chunks Pillow refuses in a header), or when ``data`` is no PNG.

    Every chunk but the pixel data is copied unchanged, in the file's order, so the chunks after the pixels
    are read by the same handlers into the same dictionaries; only IHDR says 1×1 (not interlaced).
    """
    parts = still_png_chunks(data)
    if parts is None or data[25] not in _CHANNELS:
        return None
    before, _, after = parts
    if any(c.kind in _PIXEL_CHUNKS for c in after):
        return None
    depth, colour = data[24], data[25]
    header = struct.pack(">II", 1, 1) + bytes((depth, colour)) + data[26:28] + b"\0"
    one_row = bytes(1 + -(-_CHANNELS[colour] * depth // 8))      # filter byte + one zero pixel
    small = b"".join([data[:8], _chunk(b"IHDR", header), *(data[c.start:c.end] for c in before[1:] + after),
                      _chunk(b"IDAT", zlib.compress(one_row)), _chunk(b"IEND", b"")])
    try:
        image = Image.open(io.BytesIO(small), formats=["PNG"])
        image.load()   # one pixel; Pillow then holds the text chunks and closes the stream
    except Exception:  # noqa: BLE001 - a chunk Pillow refuses before the pixels: the full decode decides
        return None
    return image
