"""The face dataset: build from folders and from --synthetic, bad inputs, duplicates, grouped splits,
card, determinism, atomic rebuilds, push to the loopback Hub and the one loader."""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakeface.utils.constants import ATTRIBUTE_COLUMNS, LABEL_NAMES, SYNTHETIC_GENERATOR, SYNTHETIC_REAL_SOURCE
from fakeface.utils.hub import ErrorKind
from fakeface.data.dataset import (
    REPORT_NAME, DatasetLoadError, build_face_dataset, build_features, load_face_dataset, push_face_dataset,
    resolve_dataset_source,
)
from fakeface.data.split import assign_group_splits, find_near_duplicates, hamming_distance, perceptual_hash
from fakeface.data.images import load_image
from fakeface.data.synthetic import generate_synthetic_sample
from tests.bad_inputs import build_corpus

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = build_corpus()
N_REAL = 16


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _scene(index: int, label: int) -> Image.Image:
    """A small varied face-like picture (the synthetic source's, decoded) to fill test folders."""
    return load_image(generate_synthetic_sample(2 * index + label, seed=11, size=64).data).image


def _rows(split) -> list[dict]:
    """Rows with the image as (bytes, path), for exact comparisons (Dataset or IterableDataset)."""
    from datasets import Image as ImageFeature

    raw = split.cast_column("image", ImageFeature(decode=False))
    return [{**row, "image": (row["image"]["bytes"], row["image"]["path"])} for row in raw]


# --------------------------------------------------------------------------- a realistic build from folders

@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    ffhq, extra, bad, gen, dalle = (root / n for n in ("ffhq", "ffhq_extra", "bad", "generator_out", "dalle2"))
    for folder in (ffhq, extra, bad, gen, dalle):
        folder.mkdir()
    (ffhq / "00000").mkdir()                                             # FFHQ's thousands sub-folders
    for i in range(N_REAL):
        (ffhq / "00000" / f"{i:05d}.png").write_bytes(_encode(_scene(i, 0), "PNG"))
    original = (ffhq / "00000" / "00003.png").read_bytes()
    planted = Image.open(io.BytesIO(original)).convert("RGB")
    planted = planted.resize((round(planted.width * 0.95), round(planted.height * 0.95)), Image.Resampling.LANCZOS)
    (extra / "near_copy_of_3.jpg").write_bytes(_encode(planted, "JPEG", quality=90))
    (extra / "exact_copy_of_4.png").write_bytes((ffhq / "00000" / "00004.png").read_bytes())
    (extra / "00100.png").write_bytes(_encode(_scene(100, 0), "PNG"))
    for case in CORPUS:
        (bad / case.filename).write_bytes(case.data)
    (root / "attributes.csv").write_text(
        "Name,FacialExp,Glasses,Gender,Race\n"
        + "".join(f"{i:05d}.png,{'Smile' if i % 2 else 'Neutral'},NoGlasses,{'Female' if i % 3 else 'Male'},"
                  f"{['White', 'Black', 'Asian'][i % 3]}\n" for i in range(N_REAL))
        + "99999.png,Smile,Glasses,Female,White\n"
    )
    lines = []
    for i in range(10):
        (gen / f"img_{i:03d}.png").write_bytes(_encode(_scene(i, 1), "PNG"))
        lines.append({"id": f"g{i}", "file": f"img_{i:03d}.png", "status": "ok",
                      "model": "gpt-image-2" if i % 2 else "gpt-image-1.5", "prompt": "a face",
                      "revised_prompt": None, "attributes": {"gender": "female", "age": 30 + i, "glasses": "no"},
                      "source_id": f"{i:05d}" if i < 6 else None, "width": 64, "height": 64,
                      "created_at": "2026-11-24T00:00:00Z"})
    lines += [
        {"id": "r1", "status": "refused", "model": "gpt-image-2", "prompt": "x"},
        {"id": "f1", "status": "failed", "model": "gpt-image-2", "prompt": "y"},
        {"id": "m1", "file": "missing.png", "status": "ok", "model": "gpt-image-2"},
        {"id": "e1", "file": "../escape.png", "status": "ok", "model": "gpt-image-2"},
    ]
    (gen / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    (gen / "stray.png").write_bytes(_encode(_scene(50, 1), "PNG"))
    (gen / ".DS_Store").write_bytes(b"\x00\x00")
    for i in range(4):
        (dalle / f"{i}.png").write_bytes(_encode(_scene(60 + i, 1), "PNG"))
    (dalle / "conflict.png").write_bytes((ffhq / "00000" / "00005.png").read_bytes())   # same bytes as a real
    return {"root": root, "ffhq": ffhq, "extra": extra, "bad": bad, "gen": gen, "dalle": dalle,
            "attributes": root / "attributes.csv"}


def _build(sources: dict[str, Path], output: Path, **overrides):
    kwargs = dict(
        real_dirs=[sources["ffhq"], sources["extra"], sources["bad"]], fake_dirs=[sources["gen"]],
        attributes=sources["attributes"], synthetic=12, seed=3, synthetic_size=64, progress=False,
    )
    kwargs.update(overrides)
    return build_face_dataset(output, **kwargs)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    output = tmp_path_factory.mktemp("built") / "faces"
    # The plain folder needs its generator named; it is built in through a second call below.
    result = _build(sources, output, fake_dirs=[sources["gen"], sources["dalle"]], fake_generator="DALL·E 2")
    return result, load_face_dataset(str(output))


def _skip_reasons(report: dict) -> dict[str, str]:
    return {item["file"]: item["reason"] for item in report["skipped"]}


def test_counts_per_split_label_generator_match_the_rows(built):
    result, data = built
    assert set(data) == {"train", "validation", "test"}
    counted: dict = {}
    for split, part in data.items():
        for row in part.select_columns(["label", "generator"]):
            by = counted.setdefault(split, {}).setdefault(LABEL_NAMES[row["label"]], Counter())
            by[row["generator"]] += 1
    assert {s: {l: dict(c) for l, c in by.items()} for s, by in counted.items()} == result.counts
    assert result.report["totals"] == {s: len(p) for s, p in data.items()}
    generators = {g for by in result.counts.values() for lab in by.values() for g in lab}
    assert {"ffhq", "gpt-image-2", "gpt-image-1.5", "dall-e-2", SYNTHETIC_GENERATOR, SYNTHETIC_REAL_SOURCE} <= generators
    # Stratified as far as 59 rows in a few big near-duplicate clusters allow (the corpus's
    # "ok" files are all one picture): train has every generator, held-out splits both labels.
    assert {g for lab in result.counts["train"].values() for g in lab} == generators
    held_out = {lab for s in ("validation", "test") for lab in result.counts[s]}
    assert held_out == {"real", "fake"} and all(result.report["totals"].values())


def test_no_source_id_spans_two_splits_and_lookalikes_follow_their_real(built):
    _, data = built
    split_of: dict[str, set] = {}
    for split, part in data.items():
        for sid in part["source_id"]:
            split_of.setdefault(sid, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values()), {k: v for k, v in split_of.items() if len(v) > 1}
    rows = [r for part in data.values() for r in part.select_columns(["source_id", "label", "generator"])]
    lookalike_ids = {r["source_id"] for r in rows if r["generator"].startswith("gpt-image") and r["source_id"][:1].isdigit()}
    assert len(lookalike_ids) == 6
    # 00005's real was dropped (label conflict); every other look-alike has its real, hence the same split.
    reals = {r["source_id"] for r in rows if r["label"] == 0}
    assert lookalike_ids - reals == {"00005"}


def test_every_bad_input_kind_is_reported_by_name_and_skipped_or_normalised(built):
    result, data = built
    reasons = _skip_reasons(result.report)
    names = {p for part in data.values() for _, p in (r["image"] for r in _rows(part.select_columns(["image"])))}
    normalised = {item["file"]: " ".join(item["notes"]) for item in result.report["normalised"]}
    for case in CORPUS:
        name = f"real/bad/{case.filename}"
        if case.expect == "error":
            assert name in reasons and re.search(case.match, reasons[name], re.IGNORECASE), (name, reasons.get(name))
            assert name not in names
        else:
            assert name in names and name not in reasons
            if case.match:
                assert re.search(case.match, normalised[name], re.IGNORECASE), (name, normalised.get(name))
    assert result.report["skipped_by_reason"] and sum(result.report["skipped_by_reason"].values()) == len(reasons)


def test_manifest_entries_and_strays_are_accounted_for(built):
    result, data = built
    reasons = _skip_reasons(result.report)
    assert "missing" in reasons["fake/generator_out/missing.png"]
    assert "not listed" in reasons["fake/generator_out/stray.png"]
    assert any("leaves the folder" in r for r in reasons.values())
    assert any(f.startswith("fake/generator_out/manifest.jsonl:") and "not valid JSON" in r for f, r in reasons.items())
    source = next(s for s in result.report["sources"] if s["folder"] == "generator_out")
    assert source["manifest_statuses"] == {"failed": 1, "ok": 12, "refused": 1}
    assert source["generators"] == {"gpt-image-1.5": 5, "gpt-image-2": 5} and source["lookalikes"] == 6
    assert source["hidden_files_ignored"] == 1
    rows = [r for part in data.values() for r in part if r["generator"] == "gpt-image-2"]
    assert {r["gender"] for r in rows} == {"female"} and {r["glasses"] for r in rows} == {"no"}
    assert all(r["age"].isdigit() and r["race"] is None for r in rows)


def test_ffhq_attribute_table_is_mapped_to_the_attribute_columns(built):
    result, data = built
    rows = {r["source_id"]: r for part in data.values() for r in part.select_columns(
        ["source_id", "generator", *ATTRIBUTE_COLUMNS]) if r["generator"] == "ffhq"}
    # Table spellings are mapped onto the generator's vocabulary (fakeface.generation.prompts.ATTRIBUTE_GRID).
    assert rows["00001"]["expression"] == "smiling" and rows["00002"]["expression"] == "neutral"
    assert rows["00003"]["gender"] == "male" and rows["00002"]["race"] == "asian" and rows["00004"]["race"] == "black"
    assert rows["00001"]["glasses"] == "none"
    assert rows["00100"]["gender"] is None                     # no row in the table: null, not dropped
    summary = result.report["attributes"]
    assert summary["rows_without_image"] == 1 and summary["rows_without_image_examples"] == ["99999"]
    assert summary["columns"] == {"FacialExp": "expression", "Glasses": "glasses", "Gender": "gender", "Race": "race"}


def test_exact_and_near_duplicates_and_label_conflicts_are_caught(built):
    result, data = built
    reasons = _skip_reasons(result.report)
    assert reasons["real/ffhq_extra/exact_copy_of_4.png"] == "exact duplicate of real/ffhq/00000/00004.png"
    assert "label conflict" in reasons["real/ffhq/00000/00005.png"] and "label conflict" in reasons["fake/dalle2/conflict.png"]
    near = result.report["duplicates"]["near"]
    planted = {"real/ffhq/00000/00003.png", "real/ffhq_extra/near_copy_of_3.jpg"}
    assert any({p["a"], p["b"]} == planted for p in near), near
    split_of = {}
    for split, part in data.items():
        for _, path in (r["image"] for r in _rows(part.select_columns(["image"]))):
            split_of[path] = split
    # Every near-duplicate pair found (the planted one, the look-alikes that lack a source_id,
    # the corpus's copies of one picture) ends up in one split.
    assert all(split_of[p["a"]] == split_of[p["b"]] for p in near)
    assert any({p["a"], p["b"]} == {"fake/generator_out/img_006.png", "real/ffhq/00000/00006.png"} for p in near)


def test_schema_original_bytes_and_public_names(built, sources):
    result, data = built
    features = build_features()
    assert all(part.features == features for part in data.values())
    rows = {r["image"][1]: r for part in data.values() for r in _rows(part)}
    original = (sources["ffhq"] / "00000" / "00007.png").read_bytes()
    row = rows["real/ffhq/00000/00007.png"]
    assert row["image"][0] == original                        # no resize, no re-encode
    assert (row["width"], row["height"], row["format"]) == (*Image.open(io.BytesIO(original)).size, "PNG")
    rotated = rows["real/bad/rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (80, 120)  # after EXIF orientation
    text = (result.output_dir / "README.md").read_text() + (result.output_dir / REPORT_NAME).read_text()
    assert str(sources["root"]) not in text and str(result.output_dir.parent) not in text


def test_card_has_yaml_license_configs_and_describes_sources(built):
    result, _ = built
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(result.output_dir / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-nc-sa-4.0" and data["task_categories"] == ["image-classification"]
    assert {c["split"] for c in data["configs"][0]["data_files"]} == {"train", "validation", "test"}
    sizes = {s["name"]: s["num_examples"] for s in data["dataset_info"]["splits"]}
    assert sizes == result.report["totals"]
    assert "CC BY-NC-SA 4.0" in card.text and "SYNTHETIC" in card.text and "gpt-image-2" in card.text
    assert "Known biases" in card.text


def test_rebuild_is_byte_identical(built, sources, tmp_path):
    result, _ = built
    again = _build(sources, tmp_path / "again", fake_dirs=[sources["gen"], sources["dalle"]], fake_generator="dall-e-2")
    files = sorted(p.relative_to(result.output_dir) for p in result.output_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.output_dir) for p in again.output_dir.rglob("*") if p.is_file())
    for rel in files:
        assert (result.output_dir / rel).read_bytes() == (again.output_dir / rel).read_bytes(), rel


def test_format_shortcut_is_reported_in_the_bias_report(tmp_path):
    real, fake = tmp_path / "r", tmp_path / "f"
    real.mkdir(), fake.mkdir()
    for i in range(6):
        (real / f"{i:05d}.png").write_bytes(_encode(_scene(i, 0), "PNG"))
        (fake / f"{i}.jpg").write_bytes(_encode(_scene(i, 1), "JPEG", quality=70))
    result = build_face_dataset(tmp_path / "out", real_dirs=[real], fake_dirs=[fake], fake_generator="x",
                                progress=False)
    findings = " ".join(result.report["bias"]["findings"])
    assert "format shortcut" in findings and "100% PNG" in findings and "100% JPEG" in findings
    assert result.report["bias"]["by_label"]["fake"]["jpeg_quality"]["median"] == 70
    assert "format shortcut" in (tmp_path / "out" / "README.md").read_text()


# --------------------------------------------------------------------------- split and hashing units

def test_group_split_is_stratified_grouped_deterministic_and_order_free():
    rng = np.random.default_rng(0)
    groups = {}
    for g in range(400):
        strata = Counter()
        strata[(0, "ffhq")] += 1
        for _ in range(rng.integers(0, 3)):
            strata[(1, str(rng.choice(["a", "b"])))] += 1
        groups[f"g{g}"] = strata
    assignment = assign_group_splits(groups, (0.8, 0.1, 0.1), seed=5)
    assert set(assignment) == set(groups)
    for stratum in {s for c in groups.values() for s in c}:
        total = sum(c[stratum] for c in groups.values())
        for split, fraction in zip(("train", "validation", "test"), (0.8, 0.1, 0.1)):
            got = sum(c[stratum] for g, c in groups.items() if assignment[g] == split)
            assert abs(got - fraction * total) <= max(3, 0.03 * total), (stratum, split, got, total)
    shuffled = dict(sorted(groups.items(), key=lambda kv: hash(kv[0]) % 97))
    assert assign_group_splits(shuffled, (0.8, 0.1, 0.1), seed=5) == assignment
    assert assign_group_splits(groups, (0.8, 0.1, 0.1), seed=6) != assignment
    with pytest.raises(ValueError, match="sum to 1"):
        assign_group_splits(groups, (0.8, 0.3, 0.1))


def test_near_duplicate_search_equals_brute_force():
    rng = np.random.default_rng(1)
    hashes = [int(x) for x in rng.integers(0, 2**63, 300, dtype=np.int64)]
    hashes += [h ^ (1 << int(b)) ^ (1 << int(c)) for h, b, c in zip(hashes[:40], rng.integers(0, 64, 40), rng.integers(0, 64, 40))]
    expected = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                if hamming_distance(hashes[i], hashes[j]) <= 8}
    assert {(i, j) for i, j, _ in find_near_duplicates(hashes, 8)} == expected and len(expected) >= 40


def test_perceptual_hash_is_robust_to_reencoding_and_tells_scenes_apart():
    a, b = _scene(1, 0), _scene(2, 0)
    recoded = Image.open(io.BytesIO(_encode(a.resize((60, 60)), "JPEG", quality=85)))
    assert hamming_distance(perceptual_hash(a), perceptual_hash(recoded)) <= 4
    assert hamming_distance(perceptual_hash(a), perceptual_hash(b)) > 8


# --------------------------------------------------------------------------- output folder safety, atomicity

def test_output_folder_that_is_not_a_dataset_is_never_replaced(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(ValueError, match="not a dataset built by fakeface"):
        build_face_dataset(precious, synthetic=4, synthetic_size=64, progress=False)
    assert (precious / "thesis.tex").read_text() == "do not delete"
    assert not list(tmp_path.glob(".home.*"))
    with pytest.raises(ValueError, match="overlaps the source folder"):
        build_face_dataset(precious / "out", real_dirs=[precious], progress=False)
    with pytest.raises(ValueError, match="no sources"):
        build_face_dataset(tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        build_face_dataset(tmp_path / "x", real_dirs=[tmp_path / "nope"], progress=False)
    with pytest.raises(ValueError, match="--fake-generator"):
        build_face_dataset(tmp_path / "x", fake_dirs=[precious], progress=False)


def test_failed_build_leaves_the_previous_folder_and_rebuild_replaces_it(tmp_path, monkeypatch):
    import fakeface.data.build as dataset_module

    output = tmp_path / "faces"
    first = build_face_dataset(output, synthetic=10, synthetic_size=64, seed=1, progress=False)
    before = {p.name: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    calls = {"n": 0}
    real_row = dataset_module.record_row

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_row(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "record_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_face_dataset(output, synthetic=20, synthetic_size=64, seed=2, progress=False)
    assert {p.name: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["faces"]
    monkeypatch.undo()
    second = build_face_dataset(output, synthetic=20, synthetic_size=64, seed=2, progress=False)
    assert sum(second.report["totals"].values()) == 20 and sum(first.report["totals"].values()) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["faces"]


def test_killed_build_leaves_old_folder_and_rerun_gives_the_clean_result(tmp_path):
    output = tmp_path / "faces"
    build_face_dataset(output, synthetic=6, synthetic_size=64, progress=False)
    old_card = (output / "README.md").read_bytes()
    args = [sys.executable, str(REPO_ROOT / "scripts" / "build_dataset.py"), "--synthetic", "3000",
            "--synthetic-size", "64", "--output-dir", str(output), "--no-progress"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob(".faces.partial-*/.synthetic-staging/*")):
            time.sleep(0.05)
        assert process.poll() is None, "the build finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert (output / "README.md").read_bytes() == old_card          # the old dataset is intact
    assert list(tmp_path.glob(".faces.partial-*"))                  # a killed build leaves only its hidden scratch
    rerun = build_face_dataset(output, synthetic=30, synthetic_size=64, progress=False)
    clean = build_face_dataset(tmp_path / "clean", synthetic=30, synthetic_size=64, progress=False)
    assert not list(tmp_path.glob(".faces.partial-*"))
    for shard in (clean.output_dir / "data").iterdir():
        assert (rerun.output_dir / "data" / shard.name).read_bytes() == shard.read_bytes()


# --------------------------------------------------------------------------- CLI

def _cli():
    spec = importlib.util.spec_from_file_location("build_dataset_cli", REPO_ROOT / "scripts" / "build_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_builds_and_prints_the_summary(tmp_path, capsys):
    cli = _cli()
    assert cli.main(["--synthetic", "16", "--synthetic-size", "64", "--output-dir", str(tmp_path / "d"),
                     "--seed", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"train\s+real\s+synthetic-camera\s+\d+", out) and "skipped: 0 file(s)" in out
    assert load_face_dataset(str(tmp_path / "d"))["train"].num_rows > 0
    assert cli.main(["--real-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "e")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["--synthetic", "4", "--output-dir", str(tmp_path / "e"), "--private"]) == 2
    assert cli.main(["--synthetic", "4", "--output-dir", str(tmp_path / "e"), "--split-fractions", "a,b"]) == 2


# --------------------------------------------------------------------------- Hub: push and load

def test_push_then_load_from_hub_equals_local_folder(hub, tmp_path):
    local = build_face_dataset(tmp_path / "faces", synthetic=24, synthetic_size=64, seed=9, progress=False,
                               max_shard_bytes=20_000)
    assert len(list((local.output_dir / "data").glob("train-*"))) > 1
    commit = push_face_dataset(local.output_dir, "org/faces", private=True)
    assert hub.commits("org/faces", repo_type="dataset")[0] == commit
    files = hub.list_files("org/faces", repo_type="dataset")
    assert {"README.md", REPORT_NAME} <= set(files) and sum(f.endswith(".parquet") for f in files) >= 4

    from_folder = load_face_dataset(str(local.output_dir))
    for source in ("org/faces", "hf-hub:org/faces"):
        from_hub = load_face_dataset(source)
        assert set(from_hub) == set(from_folder)
        for split in from_folder:
            assert from_hub[split].features == from_folder[split].features == build_features()
            assert _rows(from_hub[split]) == _rows(from_folder[split])
    streamed = load_face_dataset("org/faces", streaming=True)
    assert _rows(streamed["validation"]) == _rows(from_folder["validation"])
    assert _rows(load_face_dataset("org/faces", split="test")) == _rows(from_folder["test"])

    # A new build replaces the old one in exactly one commit; stale shards do not survive.
    smaller = build_face_dataset(tmp_path / "faces", synthetic=12, synthetic_size=64, seed=9, progress=False)
    before = len(hub.commits("org/faces", repo_type="dataset"))
    push_face_dataset(smaller.output_dir, "org/faces")
    assert len(hub.commits("org/faces", repo_type="dataset")) == before + 1
    remote = {f for f in hub.list_files("org/faces", repo_type="dataset") if f.endswith(".parquet")}
    assert remote == {f"data/{p.name}" for p in (smaller.output_dir / "data").glob("*.parquet")}
    assert sum(len(s) for s in load_face_dataset("org/faces").values()) == 12


def test_hub_outage_falls_back_to_the_cache_and_says_so(hub, tmp_path, caplog):
    local = build_face_dataset(tmp_path / "faces", synthetic=12, synthetic_size=64, progress=False)
    push_face_dataset(local.output_dir, "org/cached")
    push_face_dataset(local.output_dir, "org/never-downloaded")
    online = load_face_dataset("org/cached")
    with hub.offline(), caplog.at_level(logging.WARNING, logger="fakeface.data.dataset"):
        offline = load_face_dataset("org/cached")
        with pytest.raises(DatasetLoadError, match="could not be reached .* no cached copy") as caught:
            load_face_dataset("org/never-downloaded")
        assert caught.value.kind == ErrorKind.UNREACHABLE
    assert "Hub unreachable" in caplog.text
    for split in online:
        assert _rows(offline[split]) == _rows(online[split])


def test_loader_errors_are_specific(hub, tmp_path):
    cases = [
        (dict(source="org/does-not-exist"), "not found on the Hub", ErrorKind.NOT_FOUND),
        (dict(source=str(tmp_path / "nope")), "does not exist", ErrorKind.NOT_FOUND),
        (dict(source="not a dataset"), "neither an existing folder nor a Hub dataset id", ErrorKind.BAD_SOURCE),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases += [
        (dict(source=str(empty)), "not a face dataset folder", ErrorKind.BAD_CONFIG),
        (dict(source=str(empty), revision="main"), "revision", ErrorKind.BAD_SOURCE),
    ]
    for kwargs, message, kind in cases:
        with pytest.raises(DatasetLoadError, match=message) as caught:
            load_face_dataset(**kwargs)
        assert caught.value.kind == kind and caught.value.fix, kwargs

    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature

    wrong = tmp_path / "pets"
    (wrong / "data").mkdir(parents=True)
    Dataset.from_dict(
        {"image": [{"bytes": _encode(_scene(0, 0), "PNG"), "path": None}], "label": [0]},
        features=Features({"image": ImageFeature(), "label": ClassLabel(names=["cat", "dog"])}),
    ).to_parquet(str(wrong / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(DatasetLoadError, match=r"labels \['cat', 'dog'\]"):
        load_face_dataset(str(wrong))
    with pytest.raises(DatasetLoadError, match="has no split 'validation'") as caught:
        load_face_dataset(str(wrong), split="validation")
    assert caught.value.kind == ErrorKind.NOT_FOUND and "train" in caught.value.fix
    assert resolve_dataset_source("hf-hub:org/x@v1").revision == "v1"
    assert resolve_dataset_source(str(wrong)).kind == "local"


def test_parallel_decoding_gives_the_same_dataset(tmp_path):
    one = build_face_dataset(tmp_path / "one", synthetic=80, synthetic_size=64, seed=2, progress=False)
    two = build_face_dataset(tmp_path / "two", synthetic=80, synthetic_size=64, seed=2, progress=False, num_workers=2)
    assert one.report == two.report
    for shard in (one.output_dir / "data").iterdir():
        assert (two.output_dir / "data" / shard.name).read_bytes() == shard.read_bytes()


def test_ensure_synthetic_dataset_reuses_only_a_matching_build(tmp_path):
    from fakeface.data.dataset import REPORT_NAME, ensure_synthetic_dataset, load_face_dataset

    folder = ensure_synthetic_dataset(tmp_path / "data", 24, 0)
    report = folder / REPORT_NAME
    built_at = report.stat().st_mtime_ns
    assert sum(len(s) for s in load_face_dataset(str(folder)).values()) == 24
    ensure_synthetic_dataset(folder, 24, 0)
    assert report.stat().st_mtime_ns == built_at                      # same settings: reused
    ensure_synthetic_dataset(folder, 24, 1)
    assert report.stat().st_mtime_ns != built_at                      # another seed: rebuilt
    assert json.loads(report.read_text())["seed"] == 1
    ensure_synthetic_dataset(folder, 32, 1)
    assert sum(len(s) for s in load_face_dataset(str(folder)).values()) == 32   # another size: rebuilt
