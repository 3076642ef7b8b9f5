"""OpenAI face generation against the loopback fake, through the real ``openai`` client.

Covers the app's one-image call, the folder run (manifest, resume, kill safety,
cost guards), every error class, bounded concurrency, and that the key never
reaches output, logs or files.
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import typing
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from fakeface.generation.manifest import ManifestRecord, ManifestWriter, load_manifest
from fakeface.utils.constants import ATTRIBUTE_COLUMNS, DEFAULT_IMAGE_MODEL, RETIRED_IMAGE_MODELS
from fakeface.generation.client import (
    AccessDeniedError, ContentRefusedError, InvalidKeyError, InvalidResponseError,
    QuotaExceededError, RateLimitedError, RequestRejectedError, ServiceUnavailableError,
    available_image_models, available_image_qualities, resolve_api_key, resolve_image_model,
)
from fakeface.generation.images import generate_face
from fakeface.generation.plan import plan_generation
from fakeface.generation.runner import run_generation
from fakeface.generation.prompts import ATTRIBUTE_GRID, build_face_prompt, plan_balanced_attributes, validate_attributes

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "generate_faces.py"
MANIFEST_KEYS = {"id", "file", "status", "model", "prompt", "revised_prompt", "attributes", "source_id",
                 "size", "width", "height", "created_at"}


def run_quiet(plan, out, fake, **kwargs):
    """run_generation against the fake, no progress bar, sleeps recorded instead of slept."""
    sleeps = kwargs.pop("sleeps", [])
    return run_generation(plan, out, api_key=fake.api_key, base_url=fake.base_url, progress=False,
                          sleep=sleeps.append, env_file=None, **kwargs)


def manifest_lines(out: Path) -> list[dict]:
    """The JSON objects on disk, read without the package's reader (so the tests check the file itself)."""
    path = out / "manifest.jsonl"
    text = path.read_text(encoding="utf-8") if path.exists() else ""      # a run may not have written yet
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def ok_records(out: Path) -> list[dict]:
    return [r for r in manifest_lines(out) if r["status"] == "ok"]


def assert_folder_complete(out: Path, plan) -> None:
    """Exactly one ok line per planned id, each file decodes and matches its line; nothing else."""
    oks = ok_records(out)
    ids = [r["id"] for r in oks]
    assert Counter(ids).most_common(1)[0][1] == 1, "an image id is recorded twice"
    assert set(ids) == {p.id for p in plan}
    for record in oks:
        path = out / record["file"]
        with Image.open(path) as image:
            image.load()
            assert image.size == (record["width"], record["height"])
        assert path.stat().st_size == record["bytes"]
    images = {p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "manifest.jsonl"}
    assert images == {r["file"] for r in oks}, "files on disk without a manifest line (or the reverse)"
    assert not [p for p in out.iterdir() if ".tmp-" in p.name], "temporary files left behind"


def png_bytes(color, size=(48, 40), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- choices and prompts


def test_model_choices_come_from_the_sdk_without_retired_ones():
    from openai.types import ImageModel

    sdk = typing.get_args(ImageModel)
    models = available_image_models()
    assert set(models) < set(sdk)
    assert not set(models) & set(RETIRED_IMAGE_MODELS)
    assert "gpt-image-1-mini" not in models and "gpt-image-1-mini" in sdk   # scheduled for shutdown
    assert DEFAULT_IMAGE_MODEL in models
    assert set(available_image_qualities()) >= {"low", "medium", "high"}
    assert "standard" not in available_image_qualities()
    with pytest.raises(ValueError, match="retired"):
        resolve_image_model("dall-e-2")
    with pytest.raises(ValueError, match="shutdown"):
        resolve_image_model("gpt-image-1-mini")
    with pytest.raises(ValueError, match="choose one of"):
        plan_generation(2, model="midjourney")


@pytest.mark.parametrize("count", [1, 7, 13, 56, 100])
def test_attribute_plan_is_balanced_deterministic_and_extendable(count):
    plan = plan_balanced_attributes(count, seed=5)
    assert len(plan) == count
    for key, values in ATTRIBUTE_GRID.items():
        counts = Counter(d[key] for d in plan)
        assert set(counts) <= set(values)
        used = [counts.get(v, 0) for v in values]
        assert max(used) - min(used) <= 1, (key, counts)
    assert set(ATTRIBUTE_COLUMNS) <= set(plan[0])
    assert plan_balanced_attributes(count, seed=5) == plan
    assert plan_balanced_attributes(count + 9, seed=5)[:count] == plan
    if count >= 13:
        assert plan_balanced_attributes(count, seed=6) != plan
    # Pairs are spread too: the 8 age x gender cells are within one image of each other.
    if count >= 56:
        cells = Counter((d["age"], d["gender"]) for d in plan)
        assert len(cells) == 8 and max(cells.values()) - min(cells.values()) <= 1


def test_prompt_builder_describes_the_attributes_and_rejects_unknown_ones():
    prompt = build_face_prompt({"gender": "female", "race": "east_asian", "glasses": "sunglasses",
                                "age": "65+", "expression": "smiling"})
    for words in ("woman", "East Asian", "sunglasses", "65 or older", "smile", "photorealistic"):
        assert words in prompt
    assert "man " not in build_face_prompt({"gender": "female"}).replace("woman", "")
    assert "person" in build_face_prompt({})
    with pytest.raises(ValueError, match="unknown glasses 'monocle'"):
        validate_attributes({"glasses": "monocle"})
    with pytest.raises(ValueError, match="unknown face attribute 'hat'"):
        build_face_prompt({"hat": "yes"})


def test_plan_ids_are_deterministic_and_depend_on_the_request(tmp_path):
    first = plan_generation(6, seed=1)
    assert [p.id for p in first] == [p.id for p in plan_generation(6, seed=1)]
    assert [p.id for p in plan_generation(9, seed=1)][:6] == [p.id for p in first]
    assert len({p.id for p in first}) == 6
    other_model = [m for m in available_image_models() if m != DEFAULT_IMAGE_MODEL][0]
    assert not {p.id for p in first} & {p.id for p in plan_generation(6, seed=1, model=other_model)}
    assert not {p.id for p in first} & {p.id for p in plan_generation(6, seed=1, quality="low")}
    free = plan_generation(3, prompts=["an old fisherman", "a young chef"])
    assert [p.prompt for p in free] == ["an old fisherman", "a young chef", "an old fisherman"]
    assert all(p.attributes == {} for p in free)
    with pytest.raises(ValueError, match="--count is required"):
        plan_generation(None)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        plan_generation(1, size="big")


# ----------------------------------------------------------------------------- one image (the app)


def test_generate_face_sends_explicit_model_and_key_and_keeps_bytes(openai_fake, monkeypatch):
    # The Space's own key is in the environment; the per-request key must win.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-space-owned-key-000000")
    image = generate_face({"gender": "male", "glasses": "eyeglasses"}, api_key=openai_fake.api_key,
                          model="gpt-image-1.5", size="1024x1536", quality="medium")
    request = openai_fake.requests[-1]
    assert request.path == "/v1/images/generations"
    assert request.authorization == f"Bearer {openai_fake.api_key}"
    assert request.fields["model"] == "gpt-image-1.5"
    assert request.fields["size"] == "1024x1536" and request.fields["quality"] == "medium"
    assert "eyeglasses" in request.fields["prompt"] and "man" in request.fields["prompt"]
    assert image.data == request.image               # not re-encoded: metadata survives
    assert Image.open(io.BytesIO(image.data)).text["fake-openai"] == "request 1"
    assert (image.format, image.mime, image.extension) == ("PNG", "image/png", ".png")
    assert (image.width, image.height) == openai_fake.image_size
    assert image.attributes == {"gender": "male", "glasses": "eyeglasses"}
    assert image.revised_prompt is None


def test_generate_face_lookalike_uses_edit_with_high_fidelity(openai_fake, tmp_path):
    jpeg = png_bytes((200, 150, 120), fmt="JPEG")
    image = generate_face(api_key=openai_fake.api_key, reference_image=jpeg)
    request = openai_fake.requests[-1]
    assert request.path == "/v1/images/edits"
    assert request.fields["input_fidelity"] == "high"
    assert request.fields["model"] == DEFAULT_IMAGE_MODEL
    assert "resembles" in request.fields["prompt"]
    [(field, _, mime, sent)] = request.files
    assert field == "image" and mime == "image/jpeg" and sent == jpeg     # original bytes uploaded
    assert image.data == request.image
    # A format the edit endpoint does not take is converted to PNG for the upload only.
    bmp = tmp_path / "face.bmp"
    bmp.write_bytes(png_bytes((10, 20, 30), fmt="BMP"))
    generate_face("same person, older", api_key=openai_fake.api_key, reference_image=bmp)
    [(_, name, mime, sent)] = openai_fake.requests[-1].files
    assert mime == "image/png" and name == "reference.png" and Image.open(io.BytesIO(sent)).format == "PNG"
    assert bmp.read_bytes()[:2] == b"BM"
    with pytest.raises(ValueError, match="not an image"):
        generate_face(api_key=openai_fake.api_key, reference_image=b"%PDF-1.7 not a face")


@pytest.mark.parametrize("kind, error_class", [
    ("invalid_key", InvalidKeyError), ("permission", AccessDeniedError), ("quota", QuotaExceededError),
    ("rate_limit", RateLimitedError), ("content_policy", ContentRefusedError),
    ("moderation", ContentRefusedError), ("server", ServiceUnavailableError),
    ("unavailable", ServiceUnavailableError), ("drop", ServiceUnavailableError),
    ("bad_request", RequestRejectedError), ("garbage", InvalidResponseError), ("no_image", InvalidResponseError),
])
def test_generate_face_maps_each_failure_to_a_key_free_error(openai_fake, kind, error_class):
    openai_fake.fail_next(kind, retry_after=7)
    with pytest.raises(error_class) as caught:
        generate_face("a face", api_key=openai_fake.api_key)
    error = caught.value
    assert len(openai_fake.requests) == 1                 # one attempt: the app decides what next
    assert openai_fake.api_key not in str(error) + error.detail
    # No SDK exception (whose text and request carry more than we show) in tracebacks.
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    if kind == "rate_limit":
        assert error.retry_after == 7
    assert error.fatal == (kind in ("invalid_key", "permission", "quota"))


def test_generate_face_timeout_and_key_problems(openai_fake, monkeypatch):
    openai_fake.fail_next("slow", delay=3)
    sent = len(openai_fake.requests)
    # The server would answer after 3 s: the error proves the 0.3 s timeout fired, and one request
    # that the SDK did not retry (no wall-clock bound, so a busy machine cannot fail this).
    with pytest.raises(ServiceUnavailableError, match="did not answer in time"):
        generate_face("a face", api_key=openai_fake.api_key, timeout=0.3)
    assert len(openai_fake.requests) == sent + 1
    before = len(openai_fake.requests)
    with pytest.raises(InvalidKeyError, match="No OpenAI API key"):
        generate_face("a face")
    bad = "sk-bad\nkey-with-newline"
    with pytest.raises(InvalidKeyError, match="malformed") as caught:
        generate_face("a face", api_key=bad)
    assert "sk-bad" not in str(caught.value)
    assert len(openai_fake.requests) == before             # nothing sent without a usable key
    # The fake echoes a wrong key in full (OpenAI masks it); it must not come back to us.
    wrong = "sk-wrong-key-abcdefghijkl"
    with pytest.raises(InvalidKeyError) as caught:
        generate_face("a face", api_key=wrong)
    assert wrong not in str(caught.value) + caught.value.detail
    assert "Incorrect API key" in caught.value.detail
    with pytest.raises(ValueError, match="give a prompt"):
        generate_face("  ", api_key=openai_fake.api_key)


def test_api_key_from_environment_or_env_file(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("# secrets\nOPENAI_API_KEY=sk-from-dotenv-123456\n")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve_api_key(env_file=env_file) == "sk-from-dotenv-123456"
    assert "OPENAI_API_KEY" not in os.environ                 # read, not exported to children
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-environment-9999")
    assert resolve_api_key(env_file=env_file) == "sk-from-environment-9999"
    assert resolve_api_key("sk-per-request-7777", env_file=env_file) == "sk-per-request-7777"
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(InvalidKeyError, match=r"\.env"):
        resolve_api_key(env_file=tmp_path / "missing.env")


# ----------------------------------------------------------------------------- folder runs


def test_run_writes_valid_images_and_manifest_then_skips_on_rerun(openai_fake, tmp_path):
    openai_fake.revised_prompts = True
    out = tmp_path / "fakes"
    plan = plan_generation(7, seed=2)
    summary = run_quiet(plan, out, openai_fake, concurrency=3)
    assert (summary.ok, summary.refused, summary.failed, summary.requests) == (7, 0, 0, 7)
    assert summary.complete
    assert_folder_complete(out, plan)
    served = set(openai_fake.images_served)
    by_id = {p.id: p for p in plan}
    for record in ok_records(out):
        assert MANIFEST_KEYS <= set(record)
        item = by_id[record["id"]]
        assert (out / record["file"]).read_bytes() in served          # bytes exactly as returned
        assert record["file"] == f"{item.id}.png" and not os.path.isabs(record["file"])
        assert record["attributes"] == item.attributes and set(ATTRIBUTE_COLUMNS) <= set(record["attributes"])
        assert record["prompt"] == item.prompt and record["revised_prompt"] == item.prompt + " (revised)"
        assert record["model"] == DEFAULT_IMAGE_MODEL and record["source_id"] is None
        assert record["created_at"].endswith("Z")
    for request in openai_fake.requests:
        assert request.fields["model"] == DEFAULT_IMAGE_MODEL
        assert request.authorization == f"Bearer {openai_fake.api_key}"
    again = run_quiet(plan, out, openai_fake)
    assert (again.already_done, again.requests, again.ok) == (7, 0, 0)
    assert len(openai_fake.requests) == 7
    bigger = plan_generation(9, seed=2)
    more = run_quiet(bigger, out, openai_fake)
    assert (more.already_done, more.ok, more.requests) == (7, 2, 2)
    assert_folder_complete(out, bigger)


def test_run_lookalikes_from_real_folder(openai_fake, tmp_path):
    real = tmp_path / "ffhq"
    real.mkdir()
    (real / "00012.png").write_bytes(png_bytes((250, 200, 180)))
    (real / "00013.jpg").write_bytes(png_bytes((90, 60, 40), fmt="JPEG"))
    (real / "00014.png").write_text("this is not a picture")
    (real / "notes.txt").write_text("ignored")
    plan = plan_generation(None, real_dir=real)
    assert [p.source_id for p in plan] == ["00012", "00013", "00014"]
    out = tmp_path / "lookalikes"
    summary = run_quiet(plan, out, openai_fake)
    assert (summary.ok, summary.failed) == (2, 1)
    edits = [r for r in openai_fake.requests if r.path == "/v1/images/edits"]
    assert len(edits) == 2 == len(openai_fake.requests)            # the broken file cost nothing
    assert all(r.fields["input_fidelity"] == "high" for r in edits)
    assert sorted(r.files[0][3] for r in edits) == sorted(
        [(real / "00012.png").read_bytes(), (real / "00013.jpg").read_bytes()])
    records = {r["source_id"]: r for r in manifest_lines(out)}
    assert records["00012"]["status"] == records["00013"]["status"] == "ok"
    assert records["00014"]["status"] == "failed" and "00014.png" in records["00014"]["error"]["message"]
    assert all(r["attributes"] == {} for r in records.values())
    twice = plan_generation(5, real_dir=real)
    assert [p.source_id for p in twice] == ["00012", "00013", "00014", "00012", "00013"]
    assert len({p.id for p in twice}) == 5 and [p.id for p in twice[:3]] == [p.id for p in plan]
    with pytest.raises(ValueError, match="holds no image files"):
        plan_generation(1, real_dir=tmp_path / "lookalikes" / "..")


def test_every_error_class_in_a_run(openai_fake, tmp_path):
    plan = plan_generation(10, prompts=[f"portrait number {i}" for i in range(10)])
    openai_fake.fail_next("moderation", count=None, prompt_contains="number 1")    # 1 only
    openai_fake.fail_next("content_policy", count=None, prompt_contains="number 2")
    openai_fake.fail_next("server", count=2, prompt_contains="number 3")            # retried, then ok
    openai_fake.fail_next("drop", count=1, prompt_contains="number 4")              # retried, then ok
    openai_fake.fail_next("slow", count=1, prompt_contains="number 5", delay=2)     # timeout, then ok
    openai_fake.fail_next("rate_limit", count=1, prompt_contains="number 6", retry_after=7)
    openai_fake.fail_next("rate_limit", count=1, prompt_contains="number 6", retry_after=1000)
    openai_fake.fail_next("garbage", count=None, prompt_contains="number 7")        # failed, move on
    openai_fake.fail_next("unavailable", count=None, prompt_contains="number 8")    # retries exhausted
    openai_fake.fail_next("bad_request", count=None, prompt_contains="number 9")    # anything else
    sleeps: list[float] = []
    out = tmp_path / "run"
    summary = run_quiet(plan, out, openai_fake, concurrency=1, timeout=0.5, max_attempts=3,
                        max_retry_after_s=30, backoff_s=1.5, sleeps=sleeps)
    status = {r["prompt"][-1]: r["status"] for r in manifest_lines(out)}
    assert status == {"0": "ok", "1": "refused", "2": "refused", "3": "ok", "4": "ok", "5": "ok", "6": "ok",
                      "7": "failed", "8": "failed", "9": "failed"}
    assert (summary.ok, summary.refused, summary.failed, summary.stopped) == (5, 2, 3, None)
    assert summary.errors == {"refused": 2, "unavailable": 2 + 1 + 1 + 3, "rate_limited": 2,
                              "invalid_response": 1, "rejected": 1}
    requests = Counter(r.fields["prompt"][-1] for r in openai_fake.requests)
    assert requests == {"0": 1, "1": 1, "2": 1, "3": 3, "4": 2, "5": 2, "6": 3, "7": 1, "8": 3, "9": 1}
    assert summary.requests == sum(requests.values())
    assert 7 in sleeps and 30 in sleeps                      # retry-after honoured, then capped
    assert sleeps.count(1.5) == 4 and sleeps.count(3.0) == 2  # exponential back-off: 3,4,5,8,8 / 3,8
    refused = next(r for r in manifest_lines(out) if r["status"] == "refused")
    assert refused["error"]["kind"] == "refused" and refused["file"] is None
    assert refused["error"]["code"] in ("moderation_blocked", "content_policy_violation")
    # The typed reader gives back exactly what was written, errors included.
    records = load_manifest(out)
    assert [r.to_dict() for r in records] == manifest_lines(out)
    assert sum(r.final for r in records) == 7 and {r.error.kind for r in records if r.status == "failed"} == {
        "unavailable", "invalid_response", "rejected"}
    text = summary.format()
    assert "5 generated, 2 refused, 3 failed" in text and "rate_limited x2" in text
    # Failed images are retried by the next run; refused ones are not.
    openai_fake.clear_failures()
    openai_fake.fail_next("moderation", count=None, prompt_contains="number 1")
    rerun = run_quiet(plan, out, openai_fake)
    assert (rerun.already_done, rerun.ok, rerun.requests) == (7, 3, 3)
    assert_folder_complete(out, [p for p in plan if p.prompt[-1] not in "12"])


@pytest.mark.parametrize("kind, error_kind", [("invalid_key", "invalid_key"), ("permission", "permission_denied"),
                                              ("quota", "quota_exceeded")])
def test_fatal_errors_stop_the_run_at_once(openai_fake, tmp_path, kind, error_kind):
    plan = plan_generation(6, seed=0)
    openai_fake.fail_next(kind, count=None)
    summary = run_quiet(plan, tmp_path / "out", openai_fake, concurrency=1)
    assert len(openai_fake.requests) == 1
    assert summary.stopped_kind == error_kind and summary.stopped
    assert (summary.ok, summary.failed, summary.not_attempted) == (0, 0, 6)
    assert load_manifest(tmp_path / "out") == []
    assert "STOPPED" in summary.format()


def test_wrong_key_stops_the_run_and_is_never_echoed(openai_fake, tmp_path, caplog):
    wrong = "sk-wrong-key-zyxwvutsrq"
    caplog.set_level(logging.DEBUG)
    summary = run_generation(plan_generation(4), tmp_path / "out", api_key=wrong, base_url=openai_fake.base_url,
                             progress=False, sleep=lambda s: None, env_file=None)
    assert summary.stopped_kind == "invalid_key" and len(openai_fake.requests) == 1
    assert wrong not in caplog.text + summary.format() + json.dumps(summary.to_dict())


def test_too_many_failures_in_a_row_stop_the_run(openai_fake, tmp_path):
    openai_fake.fail_next("bad_request", count=None)
    summary = run_quiet(plan_generation(20), tmp_path / "out", openai_fake, concurrency=1,
                        max_consecutive_failures=4)
    assert (summary.failed, summary.not_attempted, len(openai_fake.requests)) == (4, 16, 4)
    assert summary.stopped_kind == "too_many_failures" and "in a row" in summary.stopped


def test_concurrency_is_bounded(openai_fake, tmp_path):
    openai_fake.delay = 0.15
    summary = run_quiet(plan_generation(8), tmp_path / "out", openai_fake, concurrency=3)
    assert summary.ok == 8
    assert 2 <= openai_fake.max_in_flight <= 3
    with pytest.raises(ValueError, match="concurrency"):
        run_quiet(plan_generation(1), tmp_path / "out", openai_fake, concurrency=0)


def test_max_images_caps_the_run(openai_fake, tmp_path):
    plan = plan_generation(5)
    first = run_quiet(plan, tmp_path / "out", openai_fake, max_images=2)
    assert (first.ok, first.capped, len(openai_fake.requests)) == (2, 3, 2)
    assert not first.complete
    second = run_quiet(plan, tmp_path / "out", openai_fake, max_images=10)
    assert (second.already_done, second.ok, second.capped) == (2, 3, 0)
    assert_folder_complete(tmp_path / "out", plan)


# ----------------------------------------------------------------------------- kills and resumes


class SimulatedKill(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way up handles it."""


def test_crash_between_image_write_and_manifest_line_adopts_the_image(openai_fake, tmp_path, monkeypatch):
    plan = plan_generation(6, seed=4)
    out = tmp_path / "out"
    real_append = ManifestWriter.append
    calls = {"n": 0}

    def dying_append(self, record):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SimulatedKill()          # image 3 is on disk, its line is not
        real_append(self, record)

    monkeypatch.setattr(ManifestWriter, "append", dying_append)
    with pytest.raises(SimulatedKill):
        run_quiet(plan, out, openai_fake, concurrency=1)
    monkeypatch.setattr(ManifestWriter, "append", real_append)
    assert len(ok_records(out)) == 2 and len(list(out.glob("*.png"))) == 3
    paid = len(openai_fake.requests)
    assert paid == 3
    summary = run_quiet(plan, out, openai_fake, concurrency=2)
    assert (summary.already_done, summary.adopted, summary.ok) == (2, 1, 3)
    assert len(openai_fake.requests) == paid + 3            # the orphan was not paid for twice
    assert_folder_complete(out, plan)
    adopted = [r for r in ok_records(out) if r.get("adopted")]
    assert len(adopted) == 1 and adopted[0]["attributes"] == next(p for p in plan if p.id == adopted[0]["id"]).attributes


def test_manifest_reader_skips_lines_that_are_not_records(tmp_path, caplog):
    good = {"id": "face-00000-abc", "status": "ok", "file": "face-00000-abc.png", "bytes": 12, "extra": 1}
    lines = [json.dumps(good), "[1, 2]", json.dumps({"status": "ok"}), "not json", json.dumps({"id": "x", "status": ""})]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        records = load_manifest(tmp_path)
    assert records == [ManifestRecord(id=good["id"], status="ok", file=good["file"], nbytes=12)]
    assert sum("not a manifest record" in m for m in caplog.messages) == 4


def test_torn_manifest_line_and_temp_files_are_cleaned_up(openai_fake, tmp_path):
    plan = plan_generation(4, seed=9)
    out = tmp_path / "out"
    run_quiet(plan[:2], out, openai_fake)
    first = (out / "manifest.jsonl").read_bytes()
    # A kill mid-append (torn last line) and mid-write (a temp file, no final file).
    with open(out / "manifest.jsonl", "ab") as handle:
        handle.write(b'{"id": "' + plan[2].id.encode() + b'", "file": "x.png", "sta')
    (out / f".{plan[3].id}.png.tmp-123-456").write_bytes(b"\x89PNG\r\n\x1a\n half")
    assert len(load_manifest(out)) == 2
    summary = run_quiet(plan, out, openai_fake)
    assert (summary.already_done, summary.ok) == (2, 2)
    assert (out / "manifest.jsonl").read_bytes().startswith(first)
    assert_folder_complete(out, plan)


def test_cli_killed_with_sigkill_then_rerun_ends_with_exactly_the_plan(openai_fake, tmp_path):
    out = tmp_path / "killed"
    openai_fake.delay = 0.25
    env = {**os.environ, "OPENAI_API_KEY": openai_fake.api_key, "OPENAI_BASE_URL": openai_fake.base_url}
    args = [sys.executable, str(SCRIPT), "--count", "10", "--out", str(out), "--concurrency", "2",
            "--seed", "3", "--no-progress"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(ok_records(out)) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert 3 <= len(ok_records(out)) < 10
    openai_fake.delay = 0.0
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stdout
    plan = plan_generation(10, seed=3)
    assert_folder_complete(out, plan)
    assert openai_fake.api_key not in rerun.stdout + rerun.stderr


# ----------------------------------------------------------------------------- CLI, cost guard, secrets


def test_cli_dry_run_and_cost_guard_make_no_request(openai_fake, tmp_path, capsys):
    from scripts.generate_faces import main

    assert main(["--count", "30", "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "planned images: 30" in printed and "gender: female=15, male=15" in printed
    assert "cells (age x gender x race)" in printed and "gpt-image-2 x30" in printed
    with pytest.raises(SystemExit) as exit_info:
        main(["--count", "150", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--max-images 150" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--count", "2", "--out", str(tmp_path / "out"), "--model", "dall-e-3"])
    assert openai_fake.requests == []
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_cli_reads_the_key_from_a_dotenv_file(openai_fake, tmp_path, monkeypatch, capsys):
    from scripts.generate_faces import main

    monkeypatch.chdir(tmp_path)
    assert main(["--count", "2", "--out", "out", "--no-progress"]) == 1       # no key anywhere
    assert "No OpenAI API key" in capsys.readouterr().err
    assert openai_fake.requests == []
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={openai_fake.api_key}\n")
    assert main(["--count", "2", "--out", "out", "--no-progress", "--max-images", "1"]) == 4
    assert main(["--count", "2", "--out", "out", "--no-progress"]) == 0
    assert len(ok_records(tmp_path / "out")) == 2


def test_key_never_appears_in_output_logs_or_files(openai_fake, tmp_path, monkeypatch, capsys, caplog):
    from scripts.generate_faces import main

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", openai_fake.api_key)
    monkeypatch.setenv("OPENAI_LOG", "debug")
    real = tmp_path / "real"
    real.mkdir()
    (real / "00001.png").write_bytes(png_bytes((1, 2, 3)))
    for kind in ("moderation", "garbage", "bad_request", "server", "rate_limit"):
        openai_fake.fail_next(kind, retry_after=0)
    out = tmp_path / "out"
    code = main(["--count", "6", "--out", str(out), "--retries", "1", "--concurrency", "2"])
    code_lookalike = main(["--from-real", str(real), "--out", str(out)])
    openai_fake.fail_next("invalid_key", count=None)
    code_fatal = main(["--count", "8", "--out", str(out)])
    assert (code, code_lookalike, code_fatal) == (3, 0, 1)
    captured = capsys.readouterr()
    seen = captured.out + captured.err + caplog.text
    for path in out.rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("latin-1")
    assert "refused" in seen and "STOPPED" in seen          # the errors were really reported
    assert openai_fake.api_key not in seen
    assert openai_fake.api_key[-12:] not in seen


def test_output_folders_feed_build_dataset(openai_fake, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for i, color in enumerate([(200, 160, 140), (90, 70, 50), (240, 220, 200), (120, 90, 60)]):
        (real / f"{i:05d}.png").write_bytes(png_bytes(color, size=(80, 80)))
    run_quiet(plan_generation(6, seed=1), tmp_path / "grid", openai_fake)
    run_quiet(plan_generation(None, real_dir=real), tmp_path / "look", openai_fake)
    built = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_dataset.py"), "--real-dir", str(real),
         "--fake-dir", str(tmp_path / "grid"), "--fake-dir", str(tmp_path / "look"),
         "--output-dir", str(tmp_path / "ds"), "--no-progress"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "skipped: 0 file(s)" in built.stdout
    import pyarrow.parquet as pq

    rows = [row for part in sorted((tmp_path / "ds" / "data").glob("*.parquet"))
            for row in pq.read_table(part, columns=["label", "generator", "source_id", "gender", "age"]).to_pylist()]
    fakes = [r for r in rows if r["label"] == 1]
    assert len(fakes) == 10 and {r["generator"] for r in fakes} == {DEFAULT_IMAGE_MODEL}
    assert sum(r["source_id"] in {"00000", "00001", "00002", "00003"} for r in fakes) == 4   # look-alikes
    grid = {p.id: p for p in plan_generation(6, seed=1)}
    assert sorted((r["gender"], r["age"]) for r in fakes if r["gender"]) == sorted(
        (p.attributes["gender"], p.attributes["age"]) for p in grid.values())


def test_ctrl_c_saves_every_image_in_flight_and_reports(openai_fake, tmp_path):
    out = tmp_path / "interrupted"
    openai_fake.delay = 0.4
    env = {**os.environ, "OPENAI_API_KEY": openai_fake.api_key, "OPENAI_BASE_URL": openai_fake.base_url}
    args = [sys.executable, str(SCRIPT), "--count", "12", "--out", str(out), "--concurrency", "3", "--no-progress"]
    # A shell's background job (`make test &`, some CI runners) starts with SIGINT ignored, and Python
    # installs its Ctrl-C handler only when SIGINT is at its default: give the script a terminal's Ctrl-C.
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(ok_records(out)) < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 1, stderr
    assert "STOPPED: interrupted" in stdout
    # Every image the fake handed out is on disk with its line: nothing paid for was dropped.
    assert len(ok_records(out)) == len(openai_fake.images_served) < 12
    openai_fake.delay = 0.0
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert_folder_complete(out, plan_generation(12))
