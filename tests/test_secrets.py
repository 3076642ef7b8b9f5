"""Secrets and abuse: planted keys never leave the process; the Space's OpenAI key is rate limited;
the app serves no file outside its own.

Planted values: the Space's ``OPENAI_API_KEY``, a visitor's (wrong) key that
the OpenAI fake echoes back in full in its 401 message, and ``HF_TOKEN``.
After driving the launched app (generate with each key, failures included),
the test greps every response, the page HTML and API descriptions, every log
record and console line, and every file the app wrote. Generation runs'
manifests and logs are grepped by tests/test_generation.py
(``test_key_never_appears_in_output_logs_or_files``).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from benchmarks.loadtest import launch_local_app
from fakeface.serving.generate import RateLimiter
from fakeface.serving.models import ModelRegistry, load_models
from tests.fakes.openai_server import FakeOpenAI
from tests.test_hardening import save_tiny_model

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError as ClientAppError  # noqa: E402

SPACE_KEY = "sk-space-PLANTED-7f3a9c1e5b2d4f60a8c7e9d1"
VISITOR_KEY = "sk-visitor-PLANTED-2b4d6f8a0c1e3a5b7d9f1e3c"
HF_TOKEN = "hf_PLANTED_token_9e8d7c6b5a4f3e2d1c0b"
SECRETS = (SPACE_KEY, VISITOR_KEY, HF_TOKEN)
# Pieces long enough to be a leak, e.g. a key shown "masked" by an over-helpful message.
FRAGMENTS = tuple(s[-16:] for s in SECRETS)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS + FRAGMENTS:
        assert secret not in text, f"a planted secret appears in {where}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The app launched with the Space's key and an HF token, an OpenAI fake, logs captured, temp dirs private."""
    root = tmp_path_factory.mktemp("secrets")
    fake = FakeOpenAI(api_key=SPACE_KEY).start()
    records = _Records()
    logging.getLogger().addHandler(records)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    with pytest.MonkeyPatch.context() as mp:
        tmp = root / "tmp"
        tmp.mkdir()
        mp.setattr(tempfile, "tempdir", str(tmp))          # the app's output folder lands here
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio"))  # uploads and served files too
        mp.setenv("OPENAI_BASE_URL", fake.base_url)
        mp.setenv("OPENAI_API_KEY", SPACE_KEY)
        mp.setenv("HF_TOKEN", HF_TOKEN)
        from fakeface.app.layout import build_app

        model_dir = save_tiny_model(root / "model")
        registry = ModelRegistry.from_models(load_models([str(model_dir)], use_fast_path=False))
        limiter = RateLimiter(per_session=2, global_limit=3, window_s=3600)
        demo = build_app(registry, limiter=limiter, environ=dict(os.environ))
        url = launch_local_app(demo)
        try:
            yield {"url": url, "fake": fake, "records": records, "tmp": tmp, "model_dir": model_dir,
                   "limiter": limiter, "root": root}
        finally:
            demo.close()
            fake.stop()
            logging.getLogger().removeHandler(records)
            logging.getLogger().setLevel(old_level)


def _generate(client: Client, key: str = "", prompt: str = "a portrait photo of a person"):
    return client.predict(key, "gpt-image-2", "1024x1024", "low", prompt, "any", "any", "any", "any", "any",
                          api_name="/generate")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def test_keys_never_appear_in_responses_pages_logs_or_files(world, capfd):
    url, fake = world["url"], world["fake"]
    seen: list[tuple[str, str]] = []
    client = Client(url, verbose=False, download_files=False)

    # A visitor's wrong key: the fake's 401 message contains it in full.
    with pytest.raises(ClientAppError) as wrong:
        _generate(client, VISITOR_KEY)
    assert "key" in str(wrong.value).lower()
    assert fake.requests[-1].authorization == f"Bearer {VISITOR_KEY}"     # it really was sent, and echoed
    seen.append(("visitor-key error", str(wrong.value)))

    # The Space's key: works, and a scripted failure of every kind that could carry it.
    image, result, _ = _generate(client)
    assert result["generated"]["key"] == "the Space's"
    seen.append(("generate result", json.dumps([image, result])))
    fake.fail_next("invalid_key")
    with pytest.raises(ClientAppError) as space_wrong:
        Client(url, verbose=False, download_files=False).predict(
            "", "gpt-image-2", "1024x1024", "low", "a face", "any", "any", "any", "any", "any", api_name="/generate")
    seen.append(("space-key error", str(space_wrong.value)))

    # Detect and status answers, page HTML, API descriptions.
    face = world["tmp"] / "face.png"
    face.write_bytes(fake.images_served[-1])
    seen.append(("detect", json.dumps(client.predict(handle_file(str(face)), True, True, api_name="/detect")[0])))
    seen.append(("status", json.dumps(client.predict(api_name="/status")[0])))
    for path in ("", "config", "gradio_api/info", "gradio_api/openapi.json", "gradio_api/api-docs", "?view=api"):
        status, body = _get(url + path)
        seen.append((f"GET /{path} ({status})", body))

    for where, text in seen:
        assert_no_secret(text, where)
    assert_no_secret("\n".join(world["records"].lines), "log records")
    out, err = capfd.readouterr()
    assert_no_secret(out + err, "console output")

    # Every file the app or gradio wrote (uploads, generated images, CSVs, caches).
    written = [p for p in world["tmp"].rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in written), "expected the generated image among the app's files"
    for path in written:
        data = path.read_bytes()
        for secret in SECRETS + FRAGMENTS:
            assert secret.encode() not in data, f"a planted secret is in {path.name}"


def test_space_key_is_rate_limited_per_session_and_globally_visitor_keys_are_not(world):
    url, fake = world["url"], world["fake"]
    limiter = world["limiter"]
    # Start from a clean slate (the previous test used the Space's key too).
    limiter.reset()
    assert limiter.usage() == {"space": 0, "sessions": {}}
    first, second = (Client(url, verbose=False, download_files=False) for _ in range(2))
    sent = len(fake.requests)
    _generate(first)
    _generate(first)
    with pytest.raises(ClientAppError, match=r"2 generation.*this session"):
        _generate(first)
    _generate(second)
    with pytest.raises(ClientAppError, match=r"3 generation.*this Space"):
        _generate(second)
    assert len(fake.requests) - sent == 3, "refused requests must never reach OpenAI"
    usage = limiter.usage()   # refused attempts are not counted: 2 + 1 in the window
    assert usage["space"] == 3 and sorted(usage["sessions"].values()) == [1, 2]
    # A visitor paying with their own key is not held to the Space's limit.
    _, result, _ = _generate(second, SPACE_KEY)
    assert result["generated"]["key"] == "yours"
    assert len(fake.requests) - sent == 4


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../etc/passwd", "{model}/config.json",
                                    "{model}/model.safetensors", "{root}", "{tests}/conftest.py"])
def test_the_app_serves_no_file_outside_its_own(world, target):
    tests_dir = Path(__file__).resolve().parent
    path = target.format(model=world["model_dir"], root=world["root"], tests=tests_dir)
    resolved = (world["model_dir"] / path).resolve() if path.startswith("..") else Path(path)
    content = resolved.read_bytes()[:64].decode("utf-8", "replace") if resolved.is_file() else None
    for prefix in ("gradio_api/file=", "file=", "gradio_api/file/"):
        status, body = _get(world["url"] + prefix + urllib.parse.quote(path))
        assert status in (400, 403, 404, 405), (prefix, path, status)
        assert content is None or content not in body, (prefix, path)


def test_results_name_uploads_by_their_base_name_only(world):
    client = Client(world["url"], verbose=False, download_files=False)
    face = world["tmp"] / "secret-folder-name" / "my face.png"
    face.parent.mkdir(exist_ok=True)
    face.write_bytes(world["fake"].images_served[-1])
    result, _ = client.predict(handle_file(str(face)), False, False, api_name="/detect")
    text = json.dumps(result)
    assert result["file"] == "my face.png"
    assert "secret-folder-name" not in text and str(world["tmp"]) not in text


def test_hf_token_never_reaches_pushed_files_caches_or_the_app(hub, tmp_path, monkeypatch):
    from fakeface.modeling.detector import push_detector

    hub.token = HF_TOKEN        # the fake accepts exactly this token from now on
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    folder = save_tiny_model(tmp_path / "release")
    (folder / "README.md").write_text("# tiny detector\n")
    sha = push_detector(folder, "org/tiny")
    assert hub.head("org/tiny") == sha
    for name, data in hub.list_files("org/tiny").items():
        assert HF_TOKEN.encode() not in data, name
    [model] = load_models(["org/tiny"], use_fast_path=False)
    registry = ModelRegistry.from_models([model])
    assert_no_secret(json.dumps(registry.status()), "status")
    for path in Path(os.environ["HF_HOME"]).rglob("*"):
        if path.is_file():
            assert HF_TOKEN.encode() not in path.read_bytes(), path.name
    for path in folder.rglob("*"):
        assert HF_TOKEN.encode() not in path.read_bytes(), path.name
