"""The face stage on real photos and on odd input: found, levelled, cut at native resolution, never a crash."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fakeface.data.images import load_image
from fakeface.faces import FaceCrop, FaceScan, crop_face, crop_faces, detect_faces, draw_face_boxes

from tests.helpers import GROUP_PHOTOS, SHARED, load_seed_photos, require_shared

FACE_CROP = FaceCrop()


@pytest.fixture(scope="module")
def seed_photos() -> list[Image.Image]:
    return load_seed_photos()


def _eye_tilt_deg(landmarks) -> float:
    (xa, ya), (xb, yb) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(yb - ya, xb - xa))


def _crop_bytes(scan: FaceScan) -> list[bytes]:
    return [face.image.tobytes() for face in scan.faces]


# --------------------------------------------------------------------------- real faces

def test_each_ffhq_photo_has_its_subject_centred_and_cut_from_its_own_pixels(seed_photos):
    for photo in seed_photos:
        scan = crop_faces(photo, FACE_CROP)
        assert not scan.no_face, scan.to_record()
        face = scan.faces[0]
        # FFHQ photos can hold people in the background; the subject is the largest face by far
        assert all(other.face.size_px < face.face.size_px / 3 for other in scan.faces[1:]), scan.to_record()
        x0, y0, x1, y1 = face.box
        width, height = photo.size
        assert abs((x0 + x1) / 2 - width / 2) < 0.15 * width and abs((y0 + y1) / 2 - height / 2) < 0.15 * height
        assert not face.face.too_small and not face.face.cut_by_border
        # native resolution: the side follows the face's size in photo pixels and nothing is resized
        wanted = round(face.face.size_px * (1 + 2 * FACE_CROP.margin))
        assert face.image.size[0] == face.image.size[1] <= min(wanted, *photo.size)
        if face.rotation_deg == 0.0:
            assert face.image.size[0] == min(wanted, *photo.size)
            pixels = np.asarray(photo)
            crop = np.asarray(face.image)
            # find the crop in the photo from a landmark: crop coords + offset = photo coords
            dx = round(face.face.landmarks[0][0] - face.crop_landmarks[0][0])
            dy = round(face.face.landmarks[0][1] - face.crop_landmarks[0][1])
            side = crop.shape[0]
            assert np.array_equal(crop, pixels[dy:dy + side, dx:dx + side])


def test_a_tilted_face_comes_out_with_level_eyes(seed_photos):
    photo = seed_photos[0]
    for tilt in (-25, 12, 30):
        turned = photo.rotate(tilt, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(90, 90, 90))
        scan = crop_faces(turned, FACE_CROP)
        assert len(scan.judgeable) >= 1, (tilt, scan.to_record())
        crop = scan.faces[0]
        seen = -_eye_tilt_deg(crop.face.landmarks)     # PIL's rotate is counter-clockwise, image y points down
        assert np.sign(seen) == np.sign(tilt) and abs(seen) > abs(tilt) / 2, ("the detector should see the tilt", seen)
        # measured, not computed: detect the face again in the aligned crop and read its eye line
        again = detect_faces(crop.image, FaceCrop(try_turned=False))
        assert again, f"no face found again in the levelled crop (tilt {tilt})"
        assert abs(_eye_tilt_deg(again[0].landmarks)) < FACE_CROP.align_min_deg + 2.0, (tilt, again[0].landmarks)


def test_without_alignment_the_tilt_stays(seed_photos):
    turned = seed_photos[0].rotate(25, resample=Image.Resampling.BICUBIC, expand=True)
    crop = crop_faces(turned, FaceCrop(align=False)).faces[0]
    assert crop.rotation_deg == 0.0
    assert abs(_eye_tilt_deg(detect_faces(crop.image, FaceCrop())[0].landmarks)) > 15


def test_group_photos_give_several_faces():
    require_shared(GROUP_PHOTOS)
    counts = {}
    for path in sorted(GROUP_PHOTOS.glob("*.jpg")):
        counts[path.name] = len(crop_faces(load_image(path).image, FACE_CROP).faces)
    assert counts, f"no group photo in {GROUP_PHOTOS}"
    several = [name for name, n in counts.items() if n >= 3]
    assert len(several) >= 0.75 * len(counts), counts
    assert max(counts.values()) >= 10, counts


def test_thirty_faces_in_one_photo_are_all_found(seed_photos):
    grid = Image.new("RGB", (6 * 200, 5 * 200), (120, 120, 120))
    for i in range(30):
        tile = seed_photos[i % len(seed_photos)].resize((200, 200), Image.Resampling.LANCZOS)
        grid.paste(tile, ((i % 6) * 200, (i // 6) * 200))
    scan = crop_faces(grid, FACE_CROP)
    assert len(scan.faces) == 30, scan.to_record()["notes"]
    assert all(f.image.size[0] < 250 for f in scan.faces), "each crop is its own face, not a union"


# --------------------------------------------------------------------------- odd input

def test_blank_and_noise_have_no_face_and_say_the_whole_image_is_scored():
    rng = np.random.default_rng(0)
    for image in (Image.new("RGB", (640, 480), (200, 200, 200)),
                  Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)),
                  Image.new("RGB", (1, 1))):
        scan = crop_faces(image, FACE_CROP)
        assert scan.no_face and scan.faces == ()
        assert any("whole image is scored" in note for note in scan.notes)
        assert scan.to_record()["no_face"] is True


def test_a_cartoon_never_crashes():
    canvas = Image.new("RGB", (400, 400), "white")
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((100, 80, 300, 320), fill=(255, 220, 180), outline="black", width=4)
    draw.ellipse((150, 160, 180, 190), fill="black")
    draw.ellipse((220, 160, 250, 190), fill="black")
    draw.arc((150, 210, 250, 280), 20, 160, fill="black", width=5)
    scan = crop_faces(canvas, FACE_CROP)
    assert isinstance(scan, FaceScan)
    if scan.no_face:
        assert any("whole image is scored" in note for note in scan.notes)
    else:
        assert all(f.image.mode == "RGB" and f.image.size[0] > 0 for f in scan.faces)


def test_a_tiny_face_is_found_and_marked_too_small(seed_photos):
    canvas = Image.new("RGB", (400, 400), (128, 128, 128))
    canvas.paste(seed_photos[1].resize((64, 64), Image.Resampling.LANCZOS), (150, 150))
    scan = crop_faces(canvas, FACE_CROP)
    assert len(scan.faces) == 1 and scan.faces[0].face.too_small and scan.judgeable == ()
    assert any("too small" in note for note in scan.notes)


def test_a_face_cut_by_the_border_is_flagged_and_its_crop_stays_inside(seed_photos):
    photo = seed_photos[0]
    shifted = Image.new("RGB", photo.size, (128, 128, 128))
    shifted.paste(photo, (-photo.size[0] // 3, 0))
    scan = crop_faces(shifted, FACE_CROP)
    assert len(scan.faces) == 1
    crop = scan.faces[0]
    assert crop.face.cut_by_border and not crop_faces(photo, FACE_CROP).faces[0].face.cut_by_border
    assert crop.padding < 0.01, "the crop is shifted inside the photo, not filled"
    assert any("cut by the photo's border" in note for note in scan.notes)


def test_a_margin_larger_than_the_photo_shrinks_instead_of_inventing_pixels(seed_photos):
    photo = seed_photos[0]
    wide = crop_faces(photo, FaceCrop(margin=1.5)).faces[0]
    assert wide.image.size == (min(photo.size),) * 2 and wide.margin_used < 1.5
    assert wide.padding == 0.0
    narrow = crop_faces(photo, FaceCrop(margin=0.1)).faces[0]
    assert abs(narrow.margin_used - 0.1) < 0.01 and narrow.image.size[0] < wide.image.size[0]


def test_a_photo_lying_on_its_side_gives_the_upright_crop(seed_photos):
    # What happens: RetinaFace still finds a sideways face, but its landmarks are off by tens of degrees;
    # the eyes-to-mouth direction says the face lies on its side, the photo is searched turned, and the
    # crop is made by a lossless quarter turn. It matches the upright photo's crop up to the detector's
    # jitter (its small copy is downscaled before the turn, so its pixels differ a little).
    for photo in seed_photos[:3]:
        upright = crop_faces(photo, FACE_CROP).faces[0]
        for turn, expected in ((Image.Transpose.ROTATE_90, 270), (Image.Transpose.ROTATE_270, 90)):
            scan = crop_faces(photo.transpose(turn), FACE_CROP)
            assert scan.turned_deg == expected and len(scan.faces) >= 1, scan.to_record()
            assert any("turned" in note for note in scan.notes)
            crop = scan.faces[0]
            side = upright.image.size[0]
            assert abs(crop.image.size[0] - side) <= 0.03 * side
            eyes = np.asarray(crop.crop_landmarks[:2]) - np.asarray(upright.crop_landmarks[:2])
            assert np.abs(eyes).max() <= 0.03 * side, (crop.crop_landmarks, upright.crop_landmarks)
            # the crop is upright: the face's eyes sit above its mouth and level within the alignment tolerance
            assert crop.crop_landmarks[3][1] > crop.crop_landmarks[0][1]
            assert abs(_eye_tilt_deg(crop.crop_landmarks)) < FACE_CROP.align_min_deg + 1e-6


def test_grayscale_rgba_and_palette_photos_work_and_say_so(seed_photos):
    photo = seed_photos[3]
    for mode in ("L", "RGBA", "P", "I;16"):
        scan = crop_faces(photo.convert(mode), FACE_CROP)
        assert len(scan.faces) == 1, (mode, scan.to_record())
        assert scan.faces[0].image.mode == "RGB"
        assert any(f"was {mode}" in note for note in scan.notes)


def test_not_an_image_is_a_clear_error():
    with pytest.raises(TypeError, match="PIL image"):
        crop_faces(np.zeros((10, 10, 3), np.uint8), FACE_CROP)


# --------------------------------------------------------------------------- determinism and settings

def test_crops_are_deterministic_and_do_not_depend_on_threads(seed_photos):
    photo = seed_photos[4].rotate(15, resample=Image.Resampling.BICUBIC, expand=True)
    first = crop_faces(photo, FACE_CROP, threads=2)
    assert first.faces[0].rotation_deg != 0.0, "exercise the resampled path too"
    assert _crop_bytes(crop_faces(photo, FACE_CROP, threads=2)) == _crop_bytes(first)
    assert _crop_bytes(crop_faces(photo, FACE_CROP, threads=1)) == _crop_bytes(first)
    face = first.faces[0].face
    assert crop_face(photo, face, FACE_CROP).image.tobytes() == first.faces[0].image.tobytes()


def test_the_face_crop_round_trips_through_the_config():
    crop = FaceCrop(margin=0.2, align_min_deg=1.0, try_turned=False, detect_size=480)
    assert FaceCrop.from_cfg(crop.to_cfg()) == crop
    assert FaceCrop.from_cfg(None) is None
    with pytest.raises(ValueError, match="align_min_deg"):
        FaceCrop(align_min_deg=90)


def test_detect_size_only_changes_detection_not_the_crop_scale(seed_photos):
    photo = seed_photos[5]
    small, large = (crop_faces(photo, FaceCrop(detect_size=s)).faces[0] for s in (256, 1024))
    assert abs(small.face.size_px - large.face.size_px) < 0.15 * large.face.size_px
    assert abs(small.image.size[0] - large.image.size[0]) < 0.15 * large.image.size[0]


def test_boxes_are_drawn_with_their_labels(seed_photos):
    photo = seed_photos[0]
    scan = crop_faces(photo, FACE_CROP)
    drawn = draw_face_boxes(photo, scan.faces, ["fake 0.93"], ["#ff0000"])
    assert drawn.size == photo.size and drawn is not photo
    x0, y0, x1, y1 = scan.faces[0].box
    assert np.asarray(drawn)[(y0 + y1) // 2, x0].tolist() == [255, 0, 0]
    assert np.asarray(photo)[(y0 + y1) // 2, x0].tolist() != [255, 0, 0], "the input is left alone"
    with pytest.raises(ValueError, match="one to one"):
        draw_face_boxes(photo, scan.faces, ["a", "b"], ["red"])
    assert draw_face_boxes(photo, [], [], []).tobytes() == photo.tobytes()


def test_concurrent_calls_share_one_session_and_give_the_serial_crops(seed_photos):
    from concurrent.futures import ThreadPoolExecutor

    serial = [_crop_bytes(crop_faces(photo, FACE_CROP)) for photo in seed_photos]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda photo: _crop_bytes(crop_faces(photo, FACE_CROP)), seed_photos))
    assert parallel == serial


def test_the_benchmark_smoke_run_writes_results_that_re_render_the_same(tmp_path):
    require_shared(SHARED / "faces-dev")
    from benchmarks.face_stage import quick_config, render_from_json, run_face_stage_benchmark, write_results

    config = quick_config(data_dir=str(SHARED), max_images=6)
    results = run_face_stage_benchmark(config)
    assert results["choice"]["chosen"] in config.detect_sizes
    assert {r["variant"] for r in results["speed"]} >= {"decode only (baseline)"}
    single = results["single_face"]["by_size"]
    assert all(v["images"] == 6 and 0.0 <= v["recall"] <= 1.0 for v in single.values())
    json_path, md_path = tmp_path / "face_stage.json", tmp_path / "face_stage.md"
    write_results(results, json_path, md_path)
    first = md_path.read_text()
    assert "single-face recall" in first and "load average" in first.lower()
    render_from_json(json_path, md_path)
    assert md_path.read_text() == first
