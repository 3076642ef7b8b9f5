"""Example photos that fit the model: a real-faces release carries test-split photos; the demo keeps its stand-ins."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fakeface.serving.examples import SYNTHETIC_EXAMPLES_DIR, resolve_examples
from fakeface.serving.models import LoadedModel
from fakeface.training.examples import EXAMPLES_DIR, write_release_examples
from fakeface.utils.constants import SYNTHETIC_GENERATOR


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _split(generators: list[str], labels: list[int]):
    from datasets import Dataset, Features, Image as ImageFeature, Value, ClassLabel

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["real", "fake"]),
                         "generator": Value("string"), "source_id": Value("string"), "format": Value("string")})
    rows = {"image": [{"bytes": _jpeg(i), "path": None} for i in range(len(labels))], "label": labels,
            "generator": generators, "source_id": [f"id-{i}" for i in range(len(labels))],
            "format": ["JPEG"] * len(labels)}
    return Dataset.from_dict(rows, features=features), rows


def _card(folder, licence="cc-by-nc-sa-4.0"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\nlicense: {licence}\n---\n\n# a dataset\n")
    return str(folder)


def test_release_carries_test_photos_of_each_label_with_their_sources_and_licence(tmp_path):
    split, rows = _split(["ffhq", "ffhq", "celeba-hq", "sd21", "sd21", "stylegan3"], [0, 0, 0, 1, 1, 1])
    written = write_release_examples(tmp_path / "release", split, dataset=_card(tmp_path / "data"))
    # two per label, from distinct sources, in split order
    assert [(w["label"], w["source"]) for w in written] == [
        ("real", "ffhq"), ("real", "celeba-hq"), ("fake", "sd21"), ("fake", "stylegan3")]
    folder = tmp_path / "release" / EXAMPLES_DIR
    assert (folder / "real-1.jpg").read_bytes() == rows["image"][0]["bytes"], "original bytes, not re-encoded"
    assert (folder / "fake-4.jpg").read_bytes() == rows["image"][5]["bytes"]
    readme = (folder / "README.md").read_text()
    assert "cc-by-nc-sa-4.0" in readme and "stylegan3" in readme and "test split" in readme


def test_synthetic_release_carries_no_examples(tmp_path):
    split, _ = _split([SYNTHETIC_GENERATOR, "synthetic-camera"], [1, 0])
    assert write_release_examples(tmp_path, split, dataset=None) == []
    assert not (tmp_path / EXAMPLES_DIR).exists()


class _Model(LoadedModel):
    """A LoadedModel whose training scope is given (resolve_examples reads folder and synthetic only)."""

    def __init__(self, folder, synthetic: bool):
        super().__init__("x", detector=None, scorer=None, folder=folder)
        self._synthetic = synthetic

    @property
    def synthetic(self) -> bool:
        return self._synthetic


def test_app_offers_the_release_examples_else_stand_ins_only_for_the_demo_model(tmp_path):
    split, rows = _split(["ffhq", "sd21"], [0, 1])
    release = tmp_path / "release"
    write_release_examples(release, split, dataset=_card(tmp_path / "data", "other"))
    own = resolve_examples([_Model(release, synthetic=False)])
    assert sorted(p.name for p in own.paths) == ["fake-2.jpg", "real-1.jpg"]
    assert all(p.read_bytes() == (release / EXAMPLES_DIR / p.name).read_bytes() for p in own.paths)
    assert "licence: other" in own.caption and "test split" in own.caption

    demo = resolve_examples([_Model(tmp_path / "empty", synthetic=True)])
    assert demo.paths and all(p.parent == SYNTHETIC_EXAMPLES_DIR for p in demo.paths) and "synthetic" in demo.caption
    real_without = resolve_examples([_Model(tmp_path / "empty", synthetic=False)])
    assert real_without.paths == () and "no example photos" in real_without.caption
