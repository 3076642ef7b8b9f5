"""PNG pixels through libspng (pyspng): the same image, mode, notes and errors as Pillow's path, or Pillow itself.

The reference for every comparison is :func:`load_image` with pyspng hidden, i.e. the Pillow path
every other format takes; the real FFHQ photos are also compared with a plain Pillow decode.
"""
from __future__ import annotations

import importlib.util
import io
import re
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import fakeface.data.images as images
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.serving.provenance import read_provenance
from tests.bad_inputs import png_declaring
from tests.helpers import SEED_FFHQ, require_shared

pyspng = pytest.importorskip("pyspng", reason="pyspng is pinned in requirements.txt: run make setup")

H, W = 37, 53   # odd sizes: every Adam7 pass has a ragged edge
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


# --------------------------------------------------------------------------- making PNGs

def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _scanlines(arr: np.ndarray, depth: int) -> bytes:
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    h, w, c = arr.shape
    if depth == 16:
        rows = arr.astype(">u2").reshape(h, w * c).view(np.uint8)
    elif depth == 8:
        rows = arr.astype(np.uint8).reshape(h, w * c)
    else:   # one channel packed MSB first, rows padded to whole bytes
        per = 8 // depth
        padded = np.zeros((h, -(-w // per) * per), np.uint8)
        padded[:, :w] = arr[:, :, 0]
        groups = padded.reshape(h, -1, per)
        rows = sum(groups[:, :, i] << (8 - depth * (i + 1)) for i in range(per)).astype(np.uint8)
    return b"".join(b"\x00" + row.tobytes() for row in rows)


def encode_png(arr, colour_type: int, depth: int, *, interlace: bool = False, palette=None,
               trns: bytes | None = None, before_idat: bytes = b"", after_idat: bytes = b"") -> bytes:
    """A PNG Pillow cannot write (Adam7, 16-bit RGB, 2/4-bit grey), filter 0, byte for byte as asked."""
    arr = np.asarray(arr)
    passes = [arr[y::dy, x::dx] for y, x, dy, dx in _ADAM7] if interlace else [arr]
    raw = b"".join(_scanlines(p, depth) for p in passes if p.size)
    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], depth, colour_type, 0, 0, int(interlace))
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + before_idat
    head += _chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes()) if palette is not None else b""
    head += _chunk(b"tRNS", trns) if trns is not None else b""
    return head + _chunk(b"IDAT", zlib.compress(raw, 6)) + after_idat + _chunk(b"IEND", b"")


def _pillow_png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _kinds() -> dict[str, bytes]:
    rng = np.random.default_rng(24)
    rgb = rng.integers(0, 256, (H, W, 3), np.uint8)
    rgba = rng.integers(0, 256, (H, W, 4), np.uint8)
    rgba[:10, :, 3] = 255                                  # opaque, translucent and clear pixels
    grey = rng.integers(0, 256, (H, W), np.uint8)
    palette = Image.fromarray(rgb).quantize(200, method=Image.Quantize.MEDIANCUT)
    index, colours = rng.integers(0, 200, (H, W)), rng.integers(0, 256, (200, 3))
    kinds = {
        "rgb": _pillow_png(Image.fromarray(rgb)),
        "rgba": _pillow_png(Image.fromarray(rgba)),
        "grey": _pillow_png(Image.fromarray(grey)),
        "grey-alpha": _pillow_png(Image.fromarray(rgba[..., [0, 3]])),
        "grey-1bit": _pillow_png(Image.fromarray(grey > 127)),
        "grey-4bit": encode_png(grey >> 4, 0, 4),
        "grey-trns": _pillow_png(Image.fromarray(grey), transparency=int(grey[0, 0])),
        "rgb-trns": _pillow_png(Image.fromarray(rgb), transparency=tuple(int(v) for v in rgb[0, 0])),
        "palette": _pillow_png(palette),
        "palette-4bit": _pillow_png(Image.fromarray(rgb).quantize(16), bits=4),
        "palette-trns": _pillow_png(palette, transparency=bytes(rng.integers(0, 256, 200, np.uint8))),
        "palette-trns-one": _pillow_png(palette, transparency=3),
        "grey-16bit": _pillow_png(Image.fromarray(rng.integers(0, 65536, (H, W)).astype(np.uint16))),
        "rgb-16bit": encode_png(rng.integers(0, 65536, (H, W, 3)), 2, 16),
        "rgba-16bit": encode_png(rng.integers(0, 65536, (H, W, 4)), 6, 16),
        "grey-alpha-16bit": encode_png(rng.integers(0, 65536, (H, W, 2)), 4, 16),
    }
    for name, (arr, colour_type, depth, plte) in {
        "rgb": (rgb, 2, 8, None), "rgba": (rgba, 6, 8, None), "grey": (grey, 0, 8, None),
        "grey-alpha": (rgba[..., [0, 3]], 4, 8, None), "palette": (index, 3, 8, colours),
        "grey-16bit": (rng.integers(0, 65536, (H, W)), 0, 16, None),
        "rgb-16bit": (rng.integers(0, 65536, (H, W, 3)), 2, 16, None),
    }.items():
        kinds[f"{name}-interlaced"] = encode_png(arr, colour_type, depth, interlace=True, palette=plte)
    return kinds


KINDS = _kinds()
# libspng cannot be asked to apply a palette's tRNS alpha through pyspng: Pillow decodes those.
PILLOW_KINDS = {"palette-trns", "palette-trns-one"}


# --------------------------------------------------------------------------- helpers

def _pillow_path(monkeypatch, data: bytes, **kwargs):
    """load_image as it is without pyspng: the Pillow path every other format takes."""
    with monkeypatch.context() as patch:
        patch.setattr(images, "pyspng", None)
        return _outcome(data, **kwargs)


def _outcome(data: bytes, **kwargs):
    try:
        decoded = load_image(data, **kwargs)
    except ImageDecodeError as error:
        return ("error", str(error))
    return ("ok", decoded.image.mode, decoded.image.size, np.asarray(decoded.image).tobytes(), decoded.notes,
            decoded.original_mode, decoded.width, decoded.height, decoded.format)


class _Spy:
    """Stands in for the pyspng module and counts its calls, so a test sees libspng really run."""

    def __init__(self):
        self.calls = 0

    def load(self, data, format=None):   # noqa: A002 - pyspng's own parameter name
        self.calls += 1
        return pyspng.load(data, format)


# --------------------------------------------------------------------------- pixels

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_png_kind_decodes_to_exactly_what_pillow_gives(kind, monkeypatch):
    data = KINDS[kind]
    fast = load_image(data)
    assert fast.decoder == ("Pillow" if kind in PILLOW_KINDS else "libspng")
    assert fast.image.mode == "RGB"
    reference = _pillow_path(monkeypatch, data)
    assert reference[0] == "ok"
    assert _outcome(data)[1:3] == reference[1:3]           # mode and size first, for a readable failure
    pixels = np.asarray(fast.image)
    expected = np.frombuffer(reference[3], np.uint8).reshape(pixels.shape)
    assert np.array_equal(pixels, expected), f"{np.count_nonzero((pixels != expected).any(-1))} pixels differ"
    assert _outcome(data) == reference                     # notes, original mode, sizes, format too
    if kind in ("rgb-16bit", "grey-16bit", "rgb-16bit-interlaced", "grey-16bit-interlaced"):
        assert "16-bit PNG converted to 8-bit" in fast.notes


def test_plain_rgb_png_really_goes_through_libspng_and_only_it(monkeypatch):
    spy, pillow_loads = _Spy(), []
    monkeypatch.setattr(images, "pyspng", spy)
    pillow_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda im: pillow_loads.append(im) or pillow_load(im))
    decoded = load_image(KINDS["rgb"])
    assert spy.calls == 1 and decoded.decoder == "libspng"
    assert not pillow_loads, "Pillow decoded the pixels as well (a PNG's getexif() loads it)"
    assert np.array_equal(np.asarray(decoded.image), np.asarray(Image.open(io.BytesIO(KINDS["rgb"])).convert("RGB")))


def test_real_ffhq_pngs_match_a_plain_pillow_decode(monkeypatch):
    require_shared(SEED_FFHQ)
    paths = sorted(SEED_FFHQ.glob("*.png"))
    assert paths, f"{SEED_FFHQ} holds no PNG"
    spy = _Spy()
    monkeypatch.setattr(images, "pyspng", spy)
    for path in paths:
        decoded = load_image(path)
        with Image.open(path) as reference:
            assert np.array_equal(np.asarray(decoded.image), np.asarray(reference.convert("RGB"))), path.name
        assert (decoded.decoder, decoded.image.mode, decoded.notes) == ("libspng", "RGB", []), path.name
    assert spy.calls == len(paths)


def test_without_pyspng_installed_pillow_decodes_the_same_pixels(monkeypatch):
    """A fresh copy of the module imported while ``import pyspng`` fails (sys.modules entry None)."""
    monkeypatch.setitem(sys.modules, "pyspng", None)
    spec = importlib.util.spec_from_file_location("images_without_pyspng", images.__file__)
    bare = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bare)
    spec.loader.exec_module(bare)
    assert bare.pyspng is None
    for kind in ("rgb", "rgba", "grey-16bit", "palette", "rgb-interlaced"):
        slow, fast = bare.load_image(KINDS[kind]), load_image(KINDS[kind])
        assert (slow.decoder, fast.decoder) == ("Pillow", "libspng"), kind
        assert np.array_equal(np.asarray(slow.image), np.asarray(fast.image)), kind
        assert (slow.notes, slow.original_mode) == (fast.notes, fast.original_mode), kind


# --------------------------------------------------------------------------- what stays with Pillow

def _damaged() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    good = encode_png(rng.integers(0, 256, (48, 64, 3)) // 16 * 16, 2, 8)
    ihdr, idat_start = good[8:33], 41
    idat = good[idat_start:-24]
    flipped = bytearray(good)
    flipped[idat_start + len(idat) // 2] ^= 0x10                       # CRC no longer matches
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    return {
        "half": good[: len(good) // 2],
        "cut-in-iend": good[:-6],
        "no-iend": good[:-12],
        "zlib-cut-chunks-whole": good[:8] + ihdr + _chunk(b"IDAT", idat[: len(idat) // 2]) + _chunk(b"IEND", b""),
        "zlib-garbage": good[:8] + ihdr + _chunk(b"IDAT", rng.integers(0, 256, len(idat), np.uint8).tobytes())
        + _chunk(b"IEND", b""),
        "bit-flip-in-idat": bytes(flipped),
        "bad-ihdr-crc": good[:29] + b"\0\0\0\0" + good[33:],
        "text-after-idat": good[:-12] + _chunk(b"tEXt", b"Software\0a generator") + good[-12:],
        "apng": _pillow_png(frames[0], save_all=True, append_images=frames[1:]),
        "70000-empty-idat-chunks": good[:33] + _chunk(b"IDAT", b"") * 70_000 + good[33:],
        "declares-50000x50000": png_declaring(50_000, 50_000),
        "declares-8000x6000": png_declaring(8000, 6000),
        "declares-6000x6000-no-data": png_declaring(6000, 6000),
        "not-a-png": b"\x89PNG\r\n\x1a\n" + b"garbage" * 20,
    }


DAMAGED = _damaged()


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_odd_and_huge_pngs_give_what_the_pillow_path_gives(name, monkeypatch):
    spy = _Spy()
    monkeypatch.setattr(images, "pyspng", spy)
    outcome = _outcome(DAMAGED[name])
    assert outcome == _pillow_path(monkeypatch, DAMAGED[name])
    if outcome[0] == "ok" and name != "zlib-garbage":   # libspng refuses that one, then Pillow decodes it
        assert spy.calls == 0, "a file libspng is not trusted with must go straight to Pillow"


def test_error_messages_are_the_specific_ones():
    expected = {
        "half": r"^truncated PNG file: decoding failed \(image file is truncated",
        "zlib-cut-chunks-whole": r"^truncated PNG file: decoding failed",
        "bad-ihdr-crc": r"^corrupt or truncated PNG file: its header cannot be read",
        "declares-50000x50000": r"50000×50000 = 2\.5 GP, over the limit of 40 MP: refused as a possible "
                                r"decompression bomb",
        "declares-8000x6000": r"8000×6000 = 48 MP, over the limit of 40 MP",
        "declares-6000x6000-no-data": r"^truncated PNG file",
    }
    for name, pattern in expected.items():
        with pytest.raises(ImageDecodeError) as info:
            load_image(DAMAGED[name])
        assert re.search(pattern, str(info.value)), (name, str(info.value))


def test_pixel_limits_are_checked_before_libspng_decodes(monkeypatch):
    spy = _Spy()
    monkeypatch.setattr(images, "pyspng", spy)
    with pytest.raises(ImageDecodeError, match=r"53×37 = 1961 px, over the limit of 1000 px"):
        load_image(KINDS["rgb"], max_pixels=1000)
    with pytest.raises(ImageDecodeError, match=r"too small: 53×37 px"):
        load_image(KINDS["rgb"], min_side=40)
    assert spy.calls == 0
    load_image(KINDS["rgb"])
    assert spy.calls == 1            # the spy does count: the refusals above never reached libspng


# --------------------------------------------------------------------------- metadata

def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x0131] = "Stable Diffusion"                    # Software: a generator hint for provenance
    return exif.tobytes()


def test_metadata_before_the_pixels_is_kept_and_orientation_applied(monkeypatch):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 60, 3), np.uint8))
    info = {"icc_profile": b"\0" * 128}
    data = _pillow_png(image, exif=_exif(6), pnginfo=_text("parameters", "a photo of a face, Steps: 30"), **info)
    decoded = load_image(data)
    assert decoded.decoder == "libspng"
    assert (decoded.width, decoded.height, decoded.image.size) == (30, 60, (30, 60))
    assert "EXIF orientation applied (tag value 6)" in decoded.notes
    assert _outcome(data) == _pillow_path(monkeypatch, data)
    provenance = read_provenance(data)
    assert "parameters" in provenance["text_chunks"] and provenance["exif"].get("Software") == "Stable Diffusion"


def test_metadata_after_the_pixels_leaves_the_file_to_pillow(monkeypatch):
    """eXIf after IDAT: only Pillow's full decode reads it, so the file is Pillow's and still turned upright."""
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (30, 60, 3), np.uint8))
    exif_chunk = _chunk(b"eXIf", _exif(6))
    data = encode_png(np.asarray(image), 2, 8, after_idat=exif_chunk + _chunk(b"tEXt", b"Comment\0late text"))
    decoded = load_image(data)
    assert decoded.decoder == "Pillow"
    assert decoded.image.size == (30, 60) and "EXIF orientation applied (tag value 6)" in decoded.notes
    assert _outcome(data) == _pillow_path(monkeypatch, data)
    assert "Comment" in read_provenance(data)["text_chunks"]


def _text(key: str, value: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


# --------------------------------------------------------------------------- the benchmark

def test_decode_benchmark_runs_and_reports_which_decoder_ran(tmp_path):
    from benchmarks.decode import LOAD, LOAD_PILLOW, PILLOW, SPNG, DecodeBenchmarkConfig, render_decode, \
        run_decode_benchmark

    for kind in ("rgb", "rgb-interlaced"):
        (tmp_path / f"{kind}.png").write_bytes(KINDS[kind])
    results = run_decode_benchmark(DecodeBenchmarkConfig(seed_dir=str(tmp_path), rounds=1, min_round_seconds=0.0))
    rows = results["rows"]
    assert {r["variant"] for r in rows if r["file"].endswith(".png")} == {PILLOW, LOAD, LOAD_PILLOW, SPNG}
    assert {r["decoder"] for r in rows if r["variant"] == LOAD} == {"libspng", "Pillow"}   # the JPEG: Pillow
    assert all(r["identical_pixels"] and r["median_ms"] > 0 for r in rows)
    markdown = render_decode(results)
    assert "rgb-interlaced.png" in markdown and f"| {LOAD} |" in markdown and "<= 25 ms" in markdown
