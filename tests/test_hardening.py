"""The bad-input corpus (tests/bad_inputs.py) through every entry point that accepts images.

The launched app (detect, batch and dataset endpoints via ``gradio_client``),
``scripts/build_dataset.py`` and ``scripts/evaluate.py``: each case gets a
correct result or a clear, specific message, the server keeps serving, a
build or an evaluation skips the bad file and says so. (``load_image`` alone
and the library build are covered in tests/test_images.py and
tests/test_dataset.py.)
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.loadtest import launch_local_app
from fakeface.serving.models import ModelRegistry, load_models
from tests.bad_inputs import build_corpus, oversized_upload

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError as ClientAppError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS = build_corpus()
VERDICTS = ("real", "fake", "uncertain")


def save_tiny_model(folder: Path) -> Path:
    """A random-weight MobileNetV2 at 64 px: the plumbing is under test, not the verdicts."""
    import torch

    from fakeface.modeling.detector import create_detector, save_detector
    from fakeface.data.preprocess import Preprocessing

    torch.manual_seed(0)
    return save_detector(create_detector("mobilenetv2_050", preprocessing=Preprocessing(input_size=(3, 64, 64))), folder)


def add_corpus_rows(dataset_dir: Path, split: str = "test") -> int:
    """Append every corpus file as a row of ``split`` (a Hub dataset may hold anything); returns how many."""
    path = next((dataset_dir / "data").glob(f"{split}-*.parquet"))
    table = pq.read_table(path)
    template = table.slice(0, 1).to_pylist()[0]
    rows = [{**template, "image": {"bytes": case.data, "path": case.filename}, "label": i % 2,
             "source_id": f"corpus-{case.name}"} for i, case in enumerate(CORPUS)]
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)]), path)
    # The card's dataset_info records each split's size and datasets checks it.
    card = dataset_dir / "README.md"
    card.write_text(re.sub(rf"(- name: {split}\n\s+num_bytes: \d+\n\s+num_examples: )(\d+)",
                           lambda m: m.group(1) + str(int(m.group(2)) + len(rows)), card.read_text(), count=1))
    return len(rows)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for case in CORPUS:
        (folder / case.filename).write_bytes(case.data)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from fakeface.data.dataset import build_face_dataset

    folder = build_face_dataset(tmp_path_factory.mktemp("data") / "faces", synthetic=40, synthetic_size=64, seed=0,
                                progress=False).output_dir
    add_corpus_rows(folder)
    return folder


@pytest.fixture(scope="module")
def app_url(model_dir, dataset_dir):
    from fakeface.app.layout import build_app

    registry = ModelRegistry.from_models(load_models([str(model_dir)], use_fast_path=False), dataset=str(dataset_dir))
    demo = build_app(registry, environ={})
    url = launch_local_app(demo)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False, download_files=False)


def assert_serving(client: Client, image: Path) -> None:
    """The server still answers a normal request correctly."""
    result, _ = client.predict(handle_file(str(image)), False, False, api_name="/detect")
    assert result["verdict"] in VERDICTS


def good_image(corpus_dir: Path) -> Path:
    return corpus_dir / next(c.filename for c in CORPUS if c.name == "progressive-jpeg")


# --------------------------------------------------------------------------- the app

def test_detect_gives_each_corpus_file_a_result_or_a_specific_message(client, corpus_dir):
    failures = []
    for case in CORPUS:
        path = corpus_dir / case.filename
        try:
            result, _ = client.predict(handle_file(str(path)), False, False, api_name="/detect")
        except ClientAppError as error:
            message = str(error)
            if case.expect != "error" or not re.search(case.match, message, re.I) or "went wrong" in message:
                failures.append((case.name, "refused", message))
            continue
        if case.expect == "error":
            failures.append((case.name, "accepted", result.get("verdict")))
            continue
        notes = " ".join(result["image"]["notes"])
        if result["verdict"] not in VERDICTS or (case.match and not re.search(case.match, notes, re.I)):
            failures.append((case.name, "wrong result", result["verdict"], notes))
        if result["file"] != case.filename:        # the name as uploaded, never a server path
            failures.append((case.name, "file", result["file"]))
    assert not failures, failures
    assert_serving(client, good_image(corpus_dir))


def test_detect_with_evidence_on_awkward_but_valid_files(client, corpus_dir):
    """Grad-CAM and the robustness re-check also work on odd modes (16-bit, CMYK, animation, rotation)."""
    for name in ("png-16-bit", "cmyk-jpeg", "animated-gif", "exif-rotated-jpeg", "palette-transparency"):
        case = next(c for c in CORPUS if c.name == name)
        result, gradcam = client.predict(handle_file(str(corpus_dir / case.filename)), True, True, api_name="/detect")
        assert result["verdict"] in VERDICTS and result["robustness"]["checks"], name
        assert gradcam is not None, name
    rotated = next(c for c in CORPUS if c.name == "exif-rotated-jpeg")
    result, _ = client.predict(handle_file(str(corpus_dir / rotated.filename)), False, False, api_name="/detect")
    assert (result["image"]["width"], result["image"]["height"]) == (80, 120)   # orientation applied


def test_batch_scores_good_files_and_reports_each_bad_one(client, corpus_dir, tmp_path):
    files = [handle_file(str(corpus_dir / case.filename)) for case in CORPUS]
    table, csv_file = client.predict(files, api_name="/detect_batch")
    headers, data = table["headers"], table["data"]
    rows = {row[headers.index("file")]: dict(zip(headers, row)) for row in data}
    assert len(data) == len(CORPUS)
    for case in CORPUS:
        row = rows[case.filename]
        if case.expect == "error":
            assert row["verdict"] == "error" and re.search(case.match, row["error"], re.I), (case.name, row)
        else:
            assert row["verdict"] in VERDICTS and not row["error"], (case.name, row)
    # The CSV download has the same rows.
    csv_path = csv_file["path"] if isinstance(csv_file, dict) else csv_file
    if not Path(str(csv_path)).is_file():
        with urllib.request.urlopen(csv_file["url"]) as response:
            (tmp_path / "out.csv").write_bytes(response.read())
        csv_path = tmp_path / "out.csv"
    with open(csv_path, newline="", encoding="utf-8") as handle:
        assert sorted(r["file"] for r in csv.DictReader(handle)) == sorted(rows)
    assert_serving(client, good_image(corpus_dir))


def test_upload_over_the_limit_is_refused_and_the_server_keeps_serving(client, app_url, corpus_dir, tmp_path):
    case = oversized_upload()
    big = tmp_path / case.filename
    big.write_bytes(case.data)
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(big)), False, False, api_name="/detect")
    assert re.search(case.match, str(info.value), re.I), str(info.value)
    # The raw upload route refuses it too (a browser posts there directly).
    request = urllib.request.Request(app_url + "gradio_api/upload", data=_multipart(case.filename, case.data),
                                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(request, timeout=60)
    assert http_error.value.code == 413
    assert_serving(client, good_image(corpus_dir))


BOUNDARY = "fakefaceboundary1234"


def _multipart(filename: str, data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def test_empty_and_missing_inputs_get_a_clear_message(client):
    with pytest.raises(ClientAppError, match="Add an image first"):
        client.predict(None, False, False, api_name="/detect")
    with pytest.raises(ClientAppError, match="Add some image files"):
        client.predict([], api_name="/detect_batch")
    with pytest.raises(ClientAppError, match="Only Hub datasets"):
        client.predict("/etc", api_name="/dataset_load")
    with pytest.raises(ClientAppError, match="Enter a dataset"):
        client.predict("   ", api_name="/dataset_load")


def test_dataset_endpoints_skip_undecodable_rows(client, dataset_dir, corpus_dir):
    source = str(dataset_dir)
    summary, _ = client.predict(source, api_name="/dataset_load")
    test_rows = summary["splits"]["test"]["rows"]
    n_good = sum(c.expect == "ok" for c in CORPUS)
    n_bad = len(CORPUS) - n_good
    assert test_rows > len(CORPUS)
    gallery = client.predict(source, "test", "any", "any", "any", "any", "any", "any", "any",
                             api_name="/dataset_samples")
    assert 0 < len(gallery) <= min(24, test_rows - n_bad)
    metrics, *_ = client.predict(source, "test", None, 1000, api_name="/dataset_evaluate")
    assert metrics["n"] == test_rows - n_bad, (metrics["n"], test_rows, n_bad)
    assert sum(metrics["verdicts"].values()) == metrics["n"]
    assert_serving(client, good_image(corpus_dir))


# --------------------------------------------------------------------------- the scripts

def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_build_dataset_cli_skips_and_reports_every_bad_file(corpus_dir, tmp_path):
    reals = tmp_path / "real"
    reals.mkdir()
    for case in CORPUS:
        (reals / case.filename).write_bytes(case.data)
    out = tmp_path / "built"
    proc = _run([str(REPO / "scripts/build_dataset.py"), "--real-dir", str(reals), "--synthetic", "16",
                 "--synthetic-size", "64", "--output-dir", str(out), "--no-progress"], REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "build_report.json").read_text())
    text = json.dumps(report)
    for case in CORPUS:
        if case.expect == "error":
            assert case.filename in text, case.name
    skipped = _skipped_files(report)
    bad = {c.filename for c in CORPUS if c.expect == "error"}
    assert bad <= skipped, bad - skipped
    assert not ({c.filename for c in CORPUS if c.expect == "ok"} & skipped)
    # The console says so too, not only the report file.
    assert re.search(r"skip", proc.stdout + proc.stderr, re.I)


def _skipped_files(report: dict) -> set[str]:
    names = set()
    for item in report.get("skipped", []):
        names.add(Path(str(item.get("file", ""))).name)
    return names


def test_evaluate_cli_skips_undecodable_rows_and_says_so(model_dir, dataset_dir, tmp_path):
    out = tmp_path / "eval"
    proc = _run([str(REPO / "scripts/evaluate.py"), "--model", str(model_dir), "--dataset", str(dataset_dir),
                 "--split", "test", "--output-dir", str(out), "--no-robustness", "--no-plots"], REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    n_bad = sum(c.expect == "error" for c in CORPUS)
    import datasets

    n_rows = datasets.load_dataset(str(dataset_dir), split="test").num_rows
    assert results["overall"]["n"] == n_rows - n_bad
    assert len(re.findall(r"skipping row", proc.stderr)) == n_bad
