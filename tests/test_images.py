"""fakeface.data.images: every awkward or hostile file gets a correct decode or a specific refusal."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from fakeface.utils.constants import MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES
from fakeface.data.images import (
    ImageDecodeError, estimate_jpeg_quality, format_decode_notes, load_image, read_image_facts,
)
from tests.bad_inputs import build_corpus, oversized_upload, png_declaring

CORPUS = build_corpus()


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_corpus_case_decodes_or_is_refused_with_a_specific_reason(case):
    if case.expect == "error":
        with pytest.raises(ImageDecodeError) as info:
            load_image(case.data)
        assert re.search(case.match, str(info.value), re.IGNORECASE), str(info.value)
        return
    decoded = load_image(case.data)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (decoded.width, decoded.height)
    np.asarray(decoded.image).sum()            # the pixels are really there (not a closed lazy file)
    if case.match:
        assert re.search(case.match, " ".join(decoded.notes), re.IGNORECASE), decoded.notes


def test_error_is_a_value_error_and_messages_name_what_the_file_is():
    assert issubclass(ImageDecodeError, ValueError)
    messages = {}
    for case in CORPUS:
        if case.expect == "error":
            with pytest.raises(ImageDecodeError) as info:
                load_image(case.data)
            messages[case.name] = str(info.value)
    assert "empty" in messages["zero-bytes"]
    assert "HTML" in messages["html"] and "PDF" in messages["pdf"] and "SVG" in messages["svg"]
    assert "text" in messages["text-renamed-png"]
    assert "truncated" in messages["truncated-png"] and "PNG" in messages["truncated-png"]
    assert "50000×50000" in messages["decompression-bomb"] and "40 MP" in messages["decompression-bomb"]


def test_declared_size_over_our_limit_is_refused_before_decoding_and_pil_limit_untouched():
    before = Image.MAX_IMAGE_PIXELS
    # 8000×6000 = 48 MP: under Pillow's own bomb limit, over ours; its pixel data is absent,
    # so any attempt to decode would fail with "truncated" instead of this message.
    with pytest.raises(ImageDecodeError, match=r"8000×6000 = 48 MP, over the limit of 40 MP"):
        load_image(png_declaring(8000, 6000))
    assert Image.MAX_IMAGE_PIXELS == before and before > MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError, match=r"64×64 = 4096 px, over the limit of 1000 px"):
        load_image(_encode(_noise(64, 64), "PNG"), max_pixels=1000)


def test_min_side_is_a_parameter():
    data = _encode(_noise(40, 20), "PNG")
    assert load_image(data).width == 40
    with pytest.raises(ImageDecodeError, match=r"40×20 px, each side must be at least 32 px"):
        load_image(data, min_side=32)


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535] * 8] * 32, dtype=np.uint16)   # 0, 1, 128, 255 in 8 bit
    decoded = load_image(_encode(Image.fromarray(values), "PNG"))
    assert decoded.original_mode.startswith("I;16")
    pixels = np.asarray(decoded.image)
    assert pixels[0, :4, 0].tolist() == [0, 1, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()
    assert any("16-bit" in n for n in decoded.notes)


def test_alpha_is_flattened_on_white_and_cmyk_converted():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:16, :, 3] = 255            # top half opaque red-ish, bottom half fully transparent
    decoded = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    pixels = np.asarray(decoded.image)
    assert pixels[0, 0].tolist() == [200, 0, 0] and pixels[31, 31].tolist() == [255, 255, 255]
    assert "alpha flattened on white" in decoded.notes

    cmyk = _noise(32, 32).convert("CMYK")
    decoded = load_image(_encode(cmyk, "TIFF"))
    assert np.array_equal(np.asarray(decoded.image), np.asarray(cmyk.convert("RGB")))
    assert "CMYK converted to RGB" in decoded.notes


def test_exif_orientation_is_applied_and_sizes_follow_it():
    image = Image.new("RGB", (60, 30), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))             # red marker top-left
    exif = Image.Exif()
    exif[0x0112] = 6                                       # displayed rotated 90° clockwise
    decoded = load_image(_encode(image, "PNG", exif=exif.tobytes()))
    assert (decoded.width, decoded.height) == (30, 60) and decoded.image.size == (30, 60)
    assert decoded.image.getpixel((25, 3))[0] > 200        # the marker moved to the top-right
    assert any("orientation" in n for n in decoded.notes)
    assert read_image_facts(_encode(image, "PNG", exif=exif.tobytes()))["orientation"] == 6


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = load_image(data)
    assert np.asarray(decoded.image)[5, 5].tolist() == [255, 0, 0]
    assert "first frame of 3-frame animated GIF" in decoded.notes
    assert read_image_facts(data)["frames"] == 3


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 97])
def test_jpeg_quality_is_estimated_from_the_quantization_tables(quality):
    decoded = load_image(_encode(_noise(64, 64, quality), "JPEG", quality=quality))
    assert decoded.jpeg_quality == quality
    assert f"q≈{quality}" in format_decode_notes(decoded)


def test_jpeg_quality_is_none_without_tables():
    assert load_image(_encode(_noise(32, 32), "PNG")).jpeg_quality is None
    assert estimate_jpeg_quality(None) is None and estimate_jpeg_quality({0: [1, 2, 3]}) is None


def test_draft_decodes_jpegs_at_reduced_scale_but_reports_true_size():
    data = _encode(_noise(1024, 768), "JPEG", quality=90)
    fast = load_image(data, draft_size=(256, 192))
    assert (fast.width, fast.height) == (1024, 768)
    assert fast.image.size == (256, 192)
    assert any("draft" in n for n in fast.notes)
    assert load_image(data).image.size == (1024, 768)
    png = load_image(_encode(_noise(64, 64), "PNG"), draft_size=(16, 16))   # other formats ignore it
    assert png.image.size == (64, 64) and not png.notes


def test_paths_and_byte_limits(tmp_path):
    path = tmp_path / "face.jpg"
    path.write_bytes(_encode(_noise(48, 40), "JPEG", quality=80))
    decoded = load_image(path)
    assert (decoded.format, decoded.width, decoded.height, decoded.jpeg_quality) == ("JPEG", 48, 40, 80)
    assert load_image(str(path)).width == 48
    with pytest.raises(ImageDecodeError, match="cannot read the file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageDecodeError, match="it is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageDecodeError, match="too large"):
        load_image(path, max_bytes=100)
    case = oversized_upload()
    with pytest.raises(ImageDecodeError, match=case.match):
        load_image(case.data, max_bytes=MAX_UPLOAD_BYTES)
    with pytest.raises(TypeError):
        load_image(12345)


def test_formats_outside_the_safe_list_are_named_and_refused():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="unsupported format EPS"):
        load_image(eps)
    with pytest.raises(ImageDecodeError, match="video or non-image"):
        load_image(b"\x00\x00\x00\x1cftypisom" + b"\x00" * 40)
    with pytest.raises(ImageDecodeError, match="ZIP"):
        load_image(b"PK\x03\x04" + b"\x00" * 60)


def test_read_image_facts_reads_headers_only():
    facts = read_image_facts(png_declaring(50_000, 50_000))      # would be refused by load_image
    assert (facts["format"], facts["width"], facts["height"], facts["frames"]) == ("PNG", 50_000, 50_000, 1)
    with pytest.raises(ImageDecodeError, match="text"):
        read_image_facts(b"hello world, not an image at all")
