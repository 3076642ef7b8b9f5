"""score_photos: real photos and odd ones -> per-face scores, the photo's verdict from its most suspicious face.

The detector has random weights (MobileNetV2 0.5 at 64 px): the tests are
about which pixels get scored and how the result is put together, so every
expected number is recomputed here from the detector and the face stage.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from PIL import Image, ImageOps

from fakeface.data.images import load_image
from fakeface.data.preprocess import Preprocessing
from fakeface.faces import FaceCrop, crop_faces
from fakeface.modeling.detector import create_detector, set_face_crop
from fakeface.modeling.inference import Detector
from fakeface.modeling.photo import (
    NOTE_FROM_FACE, NOTE_NO_FACE, NOTE_NO_FACE_STAGE, SCORE_BATCH, PhotoScore, resolve_face_crop, scan_photos,
    score_photos,
)

from tests.helpers import GROUP_PHOTOS, load_seed_photos, require_shared

FACE_CROP = FaceCrop()
PP = Preprocessing(input_size=(3, 64, 64), num_test_crops=1)


@pytest.fixture(scope="module")
def seed_photos() -> list[Image.Image]:
    return load_seed_photos()


class Recording:
    """Wraps a detector's ``score``: which images reached the model, in which calls."""

    def __init__(self, inner: Detector):
        self.inner, self.config, self.model = inner, inner.config, inner.model
        self.calls: list[list[Image.Image]] = []

    def score(self, images):
        self.calls.append(list(images))
        return self.inner.score(images)

    @property
    def seen(self) -> list[Image.Image]:
        return [image for call in self.calls for image in call]


@pytest.fixture(scope="module")
def detector() -> Detector:
    import torch

    torch.manual_seed(0)
    model = create_detector("mobilenetv2_050", preprocessing=PP)
    set_face_crop(model, FACE_CROP)
    return Detector(model)


def _p(detector: Detector, image: Image.Image) -> float:
    return float(detector.score([image]).p_fake[0])


def _grid(seed_photos, count: int, tile: int = 200) -> Image.Image:
    columns = 6
    grid = Image.new("RGB", (columns * tile, -(-count // columns) * tile), (120, 120, 120))
    for i in range(count):
        grid.paste(seed_photos[i % len(seed_photos)].resize((tile, tile), Image.Resampling.LANCZOS),
                   ((i % columns) * tile, (i // columns) * tile))
    return grid


def _assert_consistent(result: PhotoScore, detector: Detector) -> None:
    """The photo's verdict is its most suspicious judged face's, or the whole image's; notes say which."""
    assert result.notes, "every result says how it was reached"
    assert result.verdict == detector.decision.verdict(result.photo_p_fake)
    for face in result.faces:
        assert (face.p_fake is None) == face.too_small == (face.verdict is None)
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 <= result.image_size[0] and 0 <= y0 < y1 <= result.image_size[1]
    if result.mode == "faces":
        judged = result.judged
        assert judged and result.photo_p_fake == max(f.p_fake for f in judged)
        worst = result.faces[result.most_suspicious]
        assert worst.p_fake == result.photo_p_fake
        assert result.notes[0] == NOTE_FROM_FACE.format(index=worst.index, judged=len(judged), found=len(result.faces))
    else:
        assert result.mode == "whole-image" and result.most_suspicious is None and not result.judged
        assert "the whole image was scored" in result.notes[0]


# --------------------------------------------------------------------------- real photos

def test_a_single_ffhq_face_gives_the_photo_its_verdict(detector, seed_photos):
    photo = seed_photos[0]
    [result] = score_photos(detector, [photo])
    _assert_consistent(result, detector)
    assert result.mode == "faces" and len(result.judged) >= 1
    crop = crop_faces(photo, FACE_CROP).faces[0]
    assert result.faces[0].box == crop.box and not result.faces[0].cut_by_border
    assert result.faces[0].p_fake == pytest.approx(_p(detector, crop.image), abs=1e-6)
    assert result.to_dict()["most_suspicious_face"] == result.faces[result.most_suspicious].index


def test_the_crops_scored_are_byte_identical_to_the_face_stage_crops(detector, seed_photos):
    """One crop definition: what the model sees here is exactly crop_faces' crops (also levelled, turned ones)."""
    tilted = seed_photos[1].rotate(20, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(90, 90, 90))
    photos = [seed_photos[0], tilted, seed_photos[2].transpose(Image.Transpose.ROTATE_90), _grid(seed_photos, 6)]
    recording = Recording(detector)
    results = score_photos(recording, photos)
    expected = [c.image for photo in photos for c in crop_faces(photo, FACE_CROP).judgeable]
    assert len(recording.seen) == len(expected) == sum(len(r.judged) for r in results) >= 9
    assert [im.tobytes() for im in recording.seen] == [im.tobytes() for im in expected]
    assert [im.size for im in recording.seen] == [im.size for im in expected]
    assert len(recording.calls) == 1, "the crops of every photo share one model call"


def test_a_group_photo_gets_a_score_per_face_and_the_most_suspicious_decides(detector):
    require_shared(GROUP_PHOTOS)
    paths = sorted(GROUP_PHOTOS.glob("*.jpg"))
    assert paths, f"no group photo in {GROUP_PHOTOS}"
    photos = [load_image(path).image for path in paths]
    scans = scan_photos(photos, FACE_CROP)
    # the group photo with the most faces big enough to judge
    best = max(range(len(photos)), key=lambda i: len(scans[i].judgeable))
    assert len(scans[best].judgeable) >= 2, "a group photo with at least two judgeable faces"
    [result] = score_photos(detector, [photos[best]])
    _assert_consistent(result, detector)
    assert result.mode == "faces" and len(result.faces) == len(scans[best].faces)
    assert [f.box for f in result.faces] == [c.box for c in scans[best].faces]
    judged = [_p(detector, c.image) for c in scans[best].judgeable]
    assert [f.p_fake for f in result.judged] == pytest.approx(judged, abs=1e-6)
    assert result.photo_p_fake == pytest.approx(max(judged), abs=1e-6)
    # the shared scans give the same result as scanning again
    [again] = score_photos(detector, [photos[best]], scans=[scans[best]])
    assert again == result


# --------------------------------------------------------------------------- odd input

def test_noise_has_no_face_and_the_whole_image_is_scored(detector):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8))
    [result] = score_photos(detector, [noise])
    _assert_consistent(result, detector)
    assert result.mode == "whole-image" and result.faces == () and result.notes[0] == NOTE_NO_FACE
    assert result.photo_p_fake == pytest.approx(_p(detector, noise), abs=1e-6)
    assert result.scored_image is noise


def test_a_tiny_face_keeps_its_box_but_is_not_scored(detector, seed_photos):
    # 100 px of a 1024² FFHQ photo on 640x480: found (a face ~50 px across), under min_face_px 64
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(seed_photos[1].resize((100, 100), Image.Resampling.LANCZOS), (320, 240))
    recording = Recording(detector)
    [result] = score_photos(recording, [canvas])
    _assert_consistent(result, detector)
    [face] = result.faces
    assert face.too_small and face.p_fake is None and 320 <= face.box[0] and face.box[2] <= 420
    assert result.mode == "whole-image" and "too small to judge" in result.notes[0]
    assert any("smaller than 64 px" in n for n in result.notes[1:])
    assert [im.size for im in recording.seen] == [canvas.size]          # only the whole image was scored


def test_thirty_faces_are_all_scored_in_bounded_model_calls(detector, seed_photos):
    grid = _grid(seed_photos, 30)
    recording = Recording(detector)
    [single, crowd, again] = score_photos(recording, [seed_photos[0], grid, grid])
    _assert_consistent(crowd, detector)
    assert len(crowd.faces) == 30 and len(crowd.judged) == 30 and again == crowd
    total = len(single.judged) + 60
    sizes = [len(c) for c in recording.calls]
    assert sum(sizes) == total and max(sizes) == SCORE_BATCH and len(sizes) == -(-total // SCORE_BATCH)


def test_a_face_cut_by_the_border_is_scored_and_flagged(detector, seed_photos):
    photo = seed_photos[0]
    shifted = Image.new("RGB", photo.size, (128, 128, 128))
    shifted.paste(photo, (-photo.size[0] // 3, 0))
    [result] = score_photos(detector, [shifted])
    _assert_consistent(result, detector)
    assert result.mode == "faces" and result.faces[0].cut_by_border
    assert any("cut by the photo's border" in n for n in result.notes)


@pytest.mark.parametrize("case", ["rotated-90", "grayscale", "posterised", "flat-colour"])
def test_odd_photos_get_a_result_and_a_clear_note(detector, seed_photos, case):
    photo = seed_photos[3]
    image = {
        "rotated-90": lambda: photo.transpose(Image.Transpose.ROTATE_90),
        "grayscale": lambda: photo.convert("L"),
        "posterised": lambda: ImageOps.posterize(photo, 2),
        # a cartoon-like face: a handful of flat colours and no camera noise
        "flat-colour": lambda: photo.quantize(6, dither=Image.Dither.NONE).convert("RGB"),
    }[case]()
    [result] = score_photos(detector, [image])
    _assert_consistent(result, detector)
    if case == "rotated-90":
        assert result.mode == "faces" and any("turned by 90 degrees" in n or "turned by 270 degrees" in n
                                              for n in result.notes)
    if case == "grayscale":
        assert any("was L" in n for n in result.notes)
    if result.mode == "whole-image":
        assert result.notes[0] == NOTE_NO_FACE


# --------------------------------------------------------------------------- where the face crop comes from

def test_a_model_without_a_face_stage_scores_the_whole_image_as_before(detector, seed_photos):
    import torch

    torch.manual_seed(0)
    old = Detector(create_detector("mobilenetv2_050", preprocessing=PP))      # no face_crop in its config
    assert resolve_face_crop(old) is None
    [result] = score_photos(old, [seed_photos[0]])
    assert result.mode == "whole-image" and result.faces == () and result.notes == (NOTE_NO_FACE_STAGE,)
    assert result.photo_p_fake == pytest.approx(_p(old, seed_photos[0]), abs=1e-6)
    # and the caller can override either way
    [forced] = score_photos(old, [seed_photos[0]], face_crop=FACE_CROP)
    assert forced.mode == "faces"
    [whole] = score_photos(detector, [seed_photos[0]], face_crop=None)
    assert whole.notes == (NOTE_NO_FACE_STAGE,)


def test_scans_made_with_another_face_crop_are_refused(detector, seed_photos):
    other = scan_photos([seed_photos[0]], replace(FACE_CROP, margin=0.2))
    with pytest.raises(ValueError, match="another face crop"):
        score_photos(detector, [seed_photos[0]], scans=other)
    with pytest.raises(ValueError, match="1 face scans for 2 photos"):
        score_photos(detector, seed_photos[:2], scans=other)


def test_a_scorer_without_a_config_needs_an_explicit_face_crop():
    @dataclass
    class _Scores:
        p_fake: np.ndarray
        verdicts: list

    class Stub:
        def score(self, images):
            return _Scores(np.full(len(images), 0.5), ["uncertain"] * len(images))

    with pytest.raises(TypeError, match="pass face_crop"):
        score_photos(Stub(), [Image.new("RGB", (32, 32))])
    [result] = score_photos(Stub(), [Image.new("RGB", (32, 32))], face_crop=None)
    assert result.verdict == "uncertain" and result.mode == "whole-image"
