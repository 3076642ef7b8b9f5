"""An upload is decoded once: provenance, image facts and the Detect tab's face boxes reuse that decode.

Every whole-image decode is counted (Pillow's ``ImageFile.load`` with pixels still to read, and
libspng's ``pyspng.load``), so a second full decode of the upload anywhere in a request fails here.
The header-only metadata of a PNG (:func:`fakeface.data.png_chunks.png_metadata_image`) must equal
what Pillow's full decode reads, chunks after the pixels included.
"""
from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, PngImagePlugin

import fakeface.data.images as images
from fakeface.data.images import load_image, read_image_facts
from fakeface.data.png_chunks import png_metadata_image
from fakeface.serving.provenance import read_provenance
from tests.helpers import GROUP_PHOTOS, require_shared

W, H = 160, 120
XMP = (b'<x:xmpmeta><rdf:Description tiff:Orientation="3" Iptc4xmpExt:DigitalSourceType='
       b'"http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/></x:xmpmeta>')


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _exif(orientation: int, software: str = "Stable Diffusion") -> bytes:
    exif = Image.Exif()
    exif[0x0112], exif[0x0131] = orientation, software
    return exif.tobytes()


def _pixels(seed: int = 0, mode: str = "RGB") -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), np.uint8)).convert(mode)


def _png(image: Image.Image, *, before: bytes = b"", after: bytes = b"", **params) -> bytes:
    """``image`` as Pillow writes it, with extra chunks spliced in before the first IDAT and before IEND."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    data = buffer.getvalue()
    idat = data.index(b"IDAT") - 4
    data = data[:idat] + before + data[idat:]
    return data[:-12] + after + data[-12:]


def _text(key: str, value: str) -> bytes:
    return _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))


def _metadata_cases() -> dict[str, bytes]:
    rich = PngImagePlugin.PngInfo()
    rich.add_text("parameters", "a face, Steps: 30")
    rich.add_itxt("prompt", "a photo of a person", zip=True)
    raw = "\nexif\n     %d\n" % len(_exif(8)) + _exif(8).hex()
    return {
        "plain": _png(_pixels()),
        "header text and exif": _png(_pixels(), pnginfo=rich, exif=_exif(6)),
        "exif and text after the pixels": _png(_pixels(), after=_chunk(b"eXIf", _exif(6)) + _text("Comment", "late")),
        "text before and after": _png(_pixels(), before=_text("Software", "early"), after=_text("Software", "late")),
        "xmp and ztxt after": _png(_pixels(), after=_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + XMP)
                                   + _chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"Steps: 20"))),
        "raw profile exif after": _png(_pixels(), after=_text("Raw profile type exif", raw)),
        "unknown chunks after": _png(_pixels(), after=_chunk(b"tIME", b"\x07\xe8\1\1\0\0\0") + _chunk(b"caBX", b"x")),
        "grey": _png(_pixels(mode="L"), after=_text("Comment", "grey")),
        "palette": _png(_pixels(mode="RGB").convert("P"), after=_text("Comment", "palette")),
        "interlaced 16-bit": _png(Image.fromarray(np.arange(W * H, dtype=np.uint16).reshape(H, W), "I;16"),
                                  after=_text("Comment", "deep")),
    }


def _fully_decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("name", list(_metadata_cases()))
def test_png_metadata_without_pixels_is_what_the_full_decode_reads(name):
    data = _metadata_cases()[name]
    full, meta = _fully_decoded(data), png_metadata_image(data)
    assert meta is not None and meta.size == (1, 1)
    assert meta.info == full.info and dict(meta.text) == dict(full.text)
    assert dict(meta.getexif()) == dict(full.getexif())


def test_png_metadata_is_left_to_the_full_decode_when_only_it_can_tell():
    frames = [_pixels(0), _pixels(1)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    cut = _png(_pixels())[:-40]
    bad_crc = bytearray(_png(_pixels(), after=_text("Comment", "late")))
    bad_crc[-20] ^= 1
    plte_after = _png(_pixels(), after=_chunk(b"PLTE", bytes(9)))
    for data in (buffer.getvalue(), cut, bytes(bad_crc), plte_after, b"GIF89a" + bytes(40)):
        assert png_metadata_image(data) is None


# --------------------------------------------------------------------------- counting decodes

@pytest.fixture
def decodes(monkeypatch):
    """(decoder, size) of every whole-image decode from here on: Pillow's loads and libspng's."""
    seen: list[tuple[str, tuple[int, int]]] = []
    pillow_load = ImageFile.ImageFile.load

    def load(self):
        if self.tile:                                 # pixels still to decode (not an already loaded image)
            seen.append(("Pillow", self.size))
        return pillow_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    if images.pyspng is not None:
        spng_load = images.pyspng.load

        def spng(data, *args, **kwargs):
            pixels = spng_load(data, *args, **kwargs)
            seen.append(("libspng", (pixels.shape[1], pixels.shape[0])))
            return pixels

        monkeypatch.setattr(images.pyspng, "load", spng)
    return seen


def _of_size(seen, size) -> list[str]:
    return [decoder for decoder, decoded in seen if decoded == tuple(size)]


def test_provenance_and_image_facts_decode_no_pixels(decodes):
    data = _metadata_cases()["exif and text after the pixels"]
    provenance = read_provenance(data)
    assert provenance["text_chunks"] == {"Comment": "late"} and provenance["exif"]["Software"] == "Stable Diffusion"
    assert read_image_facts(data)["orientation"] == 6          # from the eXIf chunk after the pixels
    assert _of_size(decodes, (W, H)) == []
    load_image(data)
    assert _of_size(decodes, (W, H)) == ["Pillow"]             # the counter sees a real decode


@pytest.fixture(scope="module")
def whole_image_model(tmp_path_factory):
    from fakeface.data.preprocess import Preprocessing
    from fakeface.modeling.detector import create_detector, save_detector
    from fakeface.serving.models import load_models

    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_detector(create_detector("mobilenetv2_050", preprocessing=Preprocessing(input_size=(3, 64, 64),
                                                                                 num_test_crops=1)), folder)
    return load_models([str(folder)], use_fast_path=False)


@pytest.mark.parametrize("case, decoder", [("plain", "libspng"), ("exif and text after the pixels", "Pillow"),
                                           ("plain", "Pillow")])
def test_analyze_bytes_decodes_a_png_once(whole_image_model, decodes, monkeypatch, case, decoder):
    from fakeface.serving.analysis import analyze_bytes

    if decoder == "Pillow" and case == "plain":
        monkeypatch.setattr(images, "pyspng", None)             # a machine without pyspng
    elif decoder == "libspng" and images.pyspng is None:
        pytest.skip("pyspng is pinned in requirements.txt: run make setup")
    data = _metadata_cases()[case]
    result = analyze_bytes(data, "x.png", whole_image_model, explain=False, robustness=False, provenance=True)
    assert result["provenance"]["format"] == "PNG" and result["image"]["bytes"] == len(data)
    assert _of_size(decodes, (W, H)) == [decoder]


# --------------------------------------------------------------------------- the Detect tab

@pytest.fixture(scope="module")
def face_context(tmp_path_factory):
    from fakeface.app.common import AppContext
    from fakeface.data.preprocess import Preprocessing
    from fakeface.faces import FaceCrop
    from fakeface.modeling.detector import create_detector, save_detector, set_face_crop
    from fakeface.serving.models import ModelRegistry, load_models
    from fakeface.utils.settings import Settings

    model = create_detector("mobilenetv2_050", preprocessing=Preprocessing(input_size=(3, 64, 64), num_test_crops=1))
    set_face_crop(model, FaceCrop())
    folder = save_detector(model, tmp_path_factory.mktemp("face_model") / "faces")
    return AppContext.create(Settings(), ModelRegistry.from_models(load_models([str(folder)], use_fast_path=False)))


@pytest.fixture(scope="module")
def group_png(tmp_path_factory):
    require_shared(GROUP_PHOTOS)
    path = tmp_path_factory.mktemp("upload") / "group.png"
    with Image.open(GROUP_PHOTOS / "ulfd_2.jpg") as photo:
        photo.convert("RGB").save(path, "PNG")
        return path, photo.size


def test_the_detect_page_decodes_the_upload_once_and_draws_the_boxes_on_that_decode(face_context, group_png, decodes):
    from fakeface.app.tabs.detect import detect_with_photo, show_detection

    path, size = group_png
    result, _, photo = detect_with_photo(face_context, str(path), False, False)
    assert result["faces"] and photo is not None and photo.size == size
    card, drawn, *_ = show_detection(result, str(path), photo)
    assert drawn is not None and drawn.size == size and "face-row" in card
    assert len(_of_size(decodes, size)) == 1, decodes
    show_detection(result, str(path))          # a direct call with only the path still decodes it
    assert len(_of_size(decodes, size)) == 2


def test_the_detect_api_returns_json_and_the_overlay_never_the_photo(face_context, group_png):
    """The photo travels in a gr.State: /detect's documented outputs stay two, and its raw output holds None."""
    import gradio as gr
    from gradio.state_holder import SessionState

    from fakeface.app.tabs.detect import build_detect_tab, detect_with_photo

    with gr.Blocks() as demo:
        build_detect_tab(face_context)
    returns = demo.get_api_info()["named_endpoints"]["/detect"]["returns"]
    assert [r["component"] for r in returns] == ["Json", "Image"]
    [detect_fn] = [fn for fn in demo.fns.values() if fn.api_name == "detect"]
    path, _ = group_png
    predictions = detect_with_photo(face_context, str(path), False, False)
    state = SessionState(demo)
    output = asyncio.run(demo.postprocess_data(detect_fn, list(predictions), state))
    sent = json.loads(json.dumps([o.model_dump() if hasattr(o, "model_dump") else o for o in output]))
    assert sent[2] is None and sent[0]["faces"]                      # no image in what goes over the wire
    assert state[detect_fn.outputs[2]._id] is predictions[2]       # kept server-side, for show_detection
