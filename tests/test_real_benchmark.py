"""The real-faces benchmark's building blocks (the benchmark itself runs outside CI: make real-benchmark)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.real_faces import (
    FAMILIES, control_view, grouped_folds, image_max, load_manifest, summarize,
)

REPO = Path(__file__).resolve().parents[1]
FACES_DEV = REPO.parent / "shared" / "data" / "faces-dev"


@pytest.fixture(scope="module")
def items():
    if not (FACES_DEV / "manifest.csv").is_file():
        pytest.skip(f"{FACES_DEV} is absent (needs the shared data next to the repo)")
    return load_manifest(FACES_DEV)


def test_every_fake_has_a_family_and_survey_pairs_share_a_group(items):
    assert {i.family for i in items if i.label} == set(FAMILIES)
    assert all(i.family is None for i in items if not i.label)
    laion = [i for i in items if i.source == "laion-survey"]
    assert laion
    for real in laion:
        partners = [i for i in items if i.group == real.group and i.label]
        assert len(partners) == 6, f"{real.file}: the six survey fakes of its prompt share its group"
    facechain = {i.group for i in items if i.source == "sd15-facechain"}
    assert len(facechain) == 1  # recurring identities: one group


def test_grouped_folds_never_split_a_group(items):
    groups = [i.group for i in items]
    fold = grouped_folds(groups, [i.label for i in items], 5, seed=0)
    assert set(fold.tolist()) == set(range(5))
    by_group: dict[str, set] = {}
    for g, f in zip(groups, fold):
        by_group.setdefault(g, set()).add(int(f))
    assert all(len(v) == 1 for v in by_group.values())


def test_control_view_treats_png_and_jpeg_alike():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    out = control_view(image, random.Random(1))
    assert out.mode == "RGB" and out.size != image.size
    assert out.width <= 400 and out.width >= 0.8 * 0.5 * 400 - 1
    assert not hasattr(out, "info") or "exif" not in out.info
    again = control_view(image, random.Random(1))
    assert np.array_equal(np.asarray(out), np.asarray(again))  # seeded: the same draw on every run


def test_image_score_is_its_most_suspicious_region():
    region_image = np.array([0, 0, 1, 2, 2, 2])
    scores = np.array([0.1, 0.9, -1.0, 0.2, 0.3, -0.5])
    got = image_max(scores, region_image, np.array([2, 0]))
    assert got.tolist() == [0.3, 0.9]


def test_summarize_counts_false_positives_per_real_source(items):
    idx = np.array([j for j, it in enumerate(items) if it.source in ("web-faces-maskdet", "ffhq-140k", "stylegan3")])
    labels = np.array([items[j].label for j in idx])
    p = np.where(labels == 1, 0.9, 0.1)
    wild = np.array([items[j].source == "web-faces-maskdet" for j in idx])
    called = labels.astype(bool) | wild  # every in-the-wild real wrongly called fake
    out = summarize(items, idx, {"p": p, "p_raw": p, "fake": called})
    assert out["overall"]["auc"] == 1.0
    assert out["per_real_source"]["web-faces-maskdet"]["fp"] == 1.0
    assert out["per_real_source"]["ffhq-140k"]["fp"] == 0.0
    assert out["in_the_wild_fp"] == 1.0
    assert out["per_generator"]["stylegan3"]["tpr"] == 1.0


def test_training_on_face_crops_replaces_images_by_the_largest_face(tmp_path):
    """train.py (face crop on by default): each split's images become the face stage's crop (PNG, native pixels)."""
    import io

    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature

    from fakeface.faces import FaceCrop, crop_faces
    from fakeface.training.face_data import FACE_FOUND_COLUMN, crop_split_to_faces, face_crop_notes

    seed_ffhq = REPO.parent / "shared" / "data" / "seed-ffhq"
    if not seed_ffhq.is_dir():
        pytest.skip(f"{seed_ffhq} is absent (needs the shared data next to the repo)")
    photo = sorted(seed_ffhq.glob("*.png"))[0]
    blank = tmp_path / "blank.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(blank)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["real", "fake"])})
    split = Dataset.from_dict({"image": [str(photo), str(blank)], "label": [0, 1]}, features=features)
    cropped = crop_split_to_faces(split, FaceCrop())
    assert cropped[FACE_FOUND_COLUMN] == [True, False]
    face = Image.open(io.BytesIO(cropped.cast_column("image", ImageFeature(decode=False))[0]["image"]["bytes"]))
    expected = crop_faces(Image.open(photo).convert("RGB"), FaceCrop()).judgeable[0].image
    assert face.format == "PNG" and np.array_equal(np.asarray(face.convert("RGB")), np.asarray(expected))
    assert face_crop_notes({"train": cropped}) == ["1 of 2 train images had no judgeable face and were used whole"]


def test_model_cards_state_the_real_face_figures_the_benchmark_wrote(tmp_path):
    """The benchmark's summary (package data) reaches every card: its numbers, and whether the release is that recipe."""
    from benchmarks.real_faces import write_card_summary
    from fakeface.training.card import REAL_FACES_SUMMARY, real_faces_section

    data = {
        "default_recipe": "finetune/mobilenetv2_100-imagenet", "command": "python scripts/real_benchmark.py",
        "dataset": {"images": 77}, "environment": {"cpu": "test cpu"},
        "targets": {"lofo_auc_min": 0.9, "pair_140k_auc": 0.95, "in_the_wild_fp_max": 0.1, "ece_after_ts_max": 0.05},
        "verdict": {"lofo_auc_control": {"gan": 0.123, "flux": 0.987}, "pair_140k_auc": 0.456,
                    "in_the_wild_fp": 0.0321, "ece_before_ts": 0.2, "ece_after_ts": 0.0789},
    }
    path = write_card_summary(data, tmp_path / "summary.json")
    same = real_faces_section("finetune", "mobilenetv2_100", path)
    assert "0.12 / 0.99" in same and "0.46" in same and "0.032" in same and "0.079" in same and "77" in same
    assert "trained with that recipe" in same
    other = real_faces_section("robust", "resnet50", path)
    assert "not that recipe" in other and "unmeasured" in other
    assert real_faces_section("finetune", "mobilenetv2_100", tmp_path / "missing.json") == ""
    # The committed summary ships with the package and renders.
    assert "## On real faces" in real_faces_section("finetune", "mobilenetv2_100", REAL_FACES_SUMMARY)
