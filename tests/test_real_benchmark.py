"""The real-faces benchmark's building blocks (the benchmark itself runs outside CI: make real-benchmark)."""
from __future__ import annotations

import csv
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import real_faces
from benchmarks.real_faces import (
    ALIGNED_OR_STUDIO, FAMILIES, IN_THE_WILD, MIN_FAMILY_FAKES, UnknownRealSourceWarning,
    UnknownSourceWarning, UnknownSourcesError, control_view, image_max, load_manifest,
)
from benchmarks.pack import is_in_the_wild
from benchmarks.protocols import grouped_folds, summarize
from tests.helpers import SHARED, require_shared

REPO = Path(__file__).resolve().parents[1]
FACES_DEV = SHARED / "faces-dev"


@pytest.fixture(scope="module")
def items():
    require_shared(FACES_DEV)
    with warnings.catch_warnings():  # a pack that grew may warn (tested below); it must never fail
        warnings.simplefilter("ignore")
        return load_manifest(FACES_DEV)


def _manifest_rows() -> tuple[list[str], list[dict[str, str]]]:
    require_shared(FACES_DEV)
    with (FACES_DEV / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _pack_with(tmp_path: Path, extra: list[tuple[str, str, int]]) -> Path:
    """A copy of faces-dev's manifest.csv alone (no images) plus ``count`` rows per (source, label) in ``extra``."""
    fields, rows = _manifest_rows()
    for source, label, count in extra:
        for k in range(count):
            row = dict(rows[0], label=label, source=source, file=f"{label}/{source}/{k:03d}.png", format="PNG")
            rows.append(row)
    pack = tmp_path / "faces-dev"
    pack.mkdir()
    with (pack / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return pack


def test_the_data_file_lists_each_source_once_under_one_label():
    """Families and real kinds are data beside the benchmark: no source twice, none both fake and real."""
    listed_fake = [s for sources in FAMILIES.values() for s in sources]
    listed_real = list(IN_THE_WILD) + list(ALIGNED_OR_STUDIO)
    assert len(listed_fake) == len(set(listed_fake)) and len(listed_real) == len(set(listed_real))
    assert not set(listed_fake) & set(listed_real)


def test_every_fake_of_the_pack_is_in_a_family_or_left_out_with_a_warning():
    """Growth is safe: whatever the pack holds, loading it warns about what is unmapped and never fails."""
    require_shared(FACES_DEV)
    _, rows = _manifest_rows()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = load_manifest(FACES_DEV)
    unmapped = {r["source"] for r in rows if r["label"] == "fake" and r["source"] not in
                {s for sources in FAMILIES.values() for s in sources}}
    kept = {i.source for i in got if i.label}
    assert not kept & unmapped
    assert all(i.family in FAMILIES for i in got if i.label)
    for source in unmapped:
        assert any(source in str(w.message) for w in record if issubclass(w.category, UnknownSourceWarning))
    assert len(got) == sum(1 for r in rows if r["label"] == "real" or r["source"] not in unmapped)


def test_the_fourth_part_is_mapped_and_its_people_share_a_group(items):
    """InfiniteYou and USO portraits: one group per person (the file-name prefix); the bias study: one per image."""
    by_source = {}
    for i in items:
        by_source.setdefault(i.source, []).append(i)
    infinite = {i.group for i in by_source["flux1-dev-infiniteyou"]}
    assert infinite == {f"person:flux1-dev-infiniteyou:p{k}" for k in range(1, 7)}
    assert {i.group for i in by_source["flux1-dev-uso"]} == {
        "person:flux1-dev-uso:identity1", "person:flux1-dev-uso:identity2"}
    for source in ("grok2-image-biasstudy", "flux1-dev-biasstudy", "imagen4-biasstudy", "studio-london-webmorph"):
        assert len({i.group for i in by_source[source]}) == len(by_source[source])
    assert {i.family for i in by_source["grok2-image-biasstudy"] + by_source["imagen4-biasstudy"]} == {"closed"}
    assert {i.family for i in by_source["flux1-dev-infiniteyou"] + by_source["flux1-dev-uso"]} == {"flux"}


def test_every_family_is_big_enough_to_hold_out(items):
    sizes = {f: sum(1 for i in items if i.family == f) for f in FAMILIES}
    assert all(n >= MIN_FAMILY_FAKES for n in sizes.values()), sizes


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


def test_people_who_recur_share_a_group(items):
    """LFW: one group per person; ILVR: one per reference photo, the Obama one with celebrity-facerec's Obamas."""
    lfw = {}
    for i in items:
        if i.source == "lfw-krasserm":
            lfw.setdefault(i.group, []).append(Path(i.file).stem.rsplit("_", 1)[0])
    assert len(lfw) == 10 and all(len(set(people)) == 1 and 7 <= len(people) <= 10 for people in lfw.values())
    ilvr = {}
    for i in items:
        if i.source == "ddpm-ilvr-ffhq-ilvradm":
            ilvr.setdefault(i.group, set()).add(Path(i.file).stem.split("__")[1].split("_")[0])
    assert sorted(map(sorted, ilvr.values())) == [["00000"], ["00001"], ["00002"], ["00003"]]
    obama = {i.group for i in items if i.source == "celebrity-facerec" and "obama" in i.file}
    assert obama == {i.group for i in items if i.source == "ddpm-ilvr-ffhq-ilvradm" and "__00002_" in i.file}
    assert len({i.group for i in items if i.source == "casia-aligned-dcface"}) == 1


def test_an_unknown_fake_source_is_warned_about_and_left_out_of_family_runs(tmp_path):
    """A new fake source in the pack: one warning naming it, its label and count and where to add it; the run goes
    on without it (the tmp pack has no images: only the manifest is read)."""
    pack = _pack_with(tmp_path, [("sd9-invented", "fake", 3), ("gan5-other", "fake", 1), ("web-invented", "real", 2)])
    with pytest.warns(UnknownRealSourceWarning, match=r"web-invented \(real, 2 images\)"):
        with pytest.warns(UnknownSourceWarning) as record:   # pytest re-emits the real source's warning outside
            got = load_manifest(pack)
    message = " ".join(str(w.message) for w in record if issubclass(w.category, UnknownSourceWarning))
    assert "sd9-invented (fake, 3 images)" in message and "gan5-other (fake, 1 image)" in message
    assert "benchmarks/faces_dev_sources.toml" in message and ", ".join(FAMILIES) in message
    assert "docs/real_faces.md" in message and str(pack / "manifest.csv") in message
    assert not {i.source for i in got} & {"sd9-invented", "gan5-other"}
    assert sum(1 for i in got if i.source == "web-invented") == 2  # an unknown real is kept, as its own kind


def test_the_command_line_exits_2_on_a_contradicting_manifest_without_results(tmp_path, monkeypatch, capsys):
    from scripts.real_benchmark import main

    pack = _pack_with(tmp_path, [("stylegan3", "real", 2)])
    monkeypatch.setattr(real_faces, "build_cache", lambda *a, **k: pytest.fail("cache built"))
    assert main(["--data-dir", str(pack), "--results-dir", str(tmp_path / "results"),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "stylegan3 (real, 2 images)" in err and "faces_dev_sources.toml" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_a_source_listed_under_the_other_label_is_named(tmp_path):
    pack = _pack_with(tmp_path, [("stylegan3", "real", 2)])  # a fake source with real rows
    with pytest.raises(UnknownSourcesError, match=r"contradicts their listing: stylegan3 \(real, 2 images\)"):
        load_manifest(pack)


def test_an_unknown_real_source_is_scored_in_a_stated_kind_with_a_warning(tmp_path):
    pack = _pack_with(tmp_path, [("web-invented", "real", 4)])
    with pytest.warns(UnknownRealSourceWarning) as record:
        got = load_manifest(pack)
    message = str(record[0].message)
    assert "web-invented (real, 4 images)" in message and "aligned-or-studio" in message
    assert "in-the-wild" in message and "[real_kinds]" in message and "docs/real_faces.md" in message
    new = [i for i in got if i.source == "web-invented"]
    assert len(new) == 4 and len({i.group for i in new}) == 4 and all(i.family is None for i in new)
    assert not is_in_the_wild("web-invented")


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

    seed_ffhq = SHARED / "seed-ffhq"
    require_shared(seed_ffhq)
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
    from benchmarks.real_faces_report import write_card_summary
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
