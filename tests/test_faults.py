"""Faults: an interrupted push leaves the previous release intact and can be retried; every OpenAI failure
gives the app a clear message and leaves it healthy; a Hub outage at start-up serves the cached model with a
notice, or a clear page when there is none.

Killed-and-resumed runs are tested where they live: training (tests/test_training.py
``test_kill_and_resume_gives_the_same_final_metrics``), generation (tests/test_generation.py
``test_cli_killed_with_sigkill_then_rerun_ends_with_exactly_the_plan``, ``test_ctrl_c_saves_every_image_in_flight_and_reports``)
and dataset builds (tests/test_dataset.py ``test_killed_build_leaves_old_folder_and_rerun_gives_the_clean_result``).
"""
import html
import re
import urllib.request

import pytest
import torch

from fakeface.modeling.detector import create_detector, load_detector, push_detector, save_detector
from fakeface.data.preprocess import Preprocessing

PP = Preprocessing(input_size=(3, 32, 32), num_test_crops=1)


def _release(tmp_path, name, seed):
    torch.manual_seed(seed)
    model = create_detector("mobilenetv2_050", preprocessing=PP).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, save_detector(model, tmp_path / name)


@pytest.mark.parametrize("target", [r"/commit/", r"^/__fake_lfs__/"])
def test_interrupted_push_keeps_the_previous_revision_and_retry_works(hub, tmp_path, instant_hub_retries, target):
    x = torch.randn(2, 3, 32, 32)
    v1, v1_dir = _release(tmp_path, "v1", seed=1)
    first = push_detector(v1_dir, "org/detector")
    v2, v2_dir = _release(tmp_path, "v2", seed=2)

    fault = hub.fail_next("*", target, status=500, count=10)  # outlasts the client's own retries
    with pytest.raises(Exception):
        push_detector(v2_dir, "org/detector")
    assert hub.head("org/detector") == first, "a failed push must not move the branch"
    with torch.no_grad():
        torch.testing.assert_close(load_detector("org/detector")(x), v1(x), rtol=0, atol=0)

    assert fault.hits >= 1
    fault.remaining = 0  # the network is back
    second = push_detector(v2_dir, "org/detector")
    assert second != first and hub.head("org/detector") == second
    assert hub.commits("org/detector")[:2] == [second, first], "one commit per release"
    with torch.no_grad():
        torch.testing.assert_close(load_detector("org/detector")(x), v2(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- OpenAI faults through the app

OPENAI_KINDS = ("invalid_key", "permission", "rate_limit", "quota", "content_policy", "moderation", "bad_request",
                "server", "unavailable", "slow", "drop", "garbage", "no_image")


@pytest.fixture(scope="module")
def generate_app(tmp_path_factory):
    """The app launched against a module-wide OpenAI fake; generation times out after 1 s."""
    from gradio_client import Client

    from benchmarks.loadtest import launch_local_app
    from fakeface.serving.generate import RateLimiter
    from fakeface.serving.models import ModelRegistry, load_models
    from fakeface.app.layout import build_app
    from tests.fakes.openai_server import FakeOpenAI
    from tests.test_hardening import save_tiny_model

    fake = FakeOpenAI().start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", fake.base_url)
        model_dir = save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
        registry = ModelRegistry.from_models(load_models([str(model_dir)], use_fast_path=False))
        demo = build_app(registry, limiter=RateLimiter(per_session=1000, global_limit=1000),
                         environ={"FAKEFACE_GENERATE_TIMEOUT_S": "1"})
        url = launch_local_app(demo)
        try:
            yield fake, Client(url, verbose=False, download_files=False)
        finally:
            demo.close()
            fake.stop()


def _generate(client, key):
    return client.predict(key, "gpt-image-2", "1024x1024", "low", "a portrait photo", "any", "any", "any", "any",
                          "any", api_name="/generate")


@pytest.mark.parametrize("kind", OPENAI_KINDS)
def test_every_openai_failure_gives_a_clear_message_and_the_app_stays_healthy(generate_app, kind):
    from gradio_client.exceptions import AppError as ClientAppError

    fake, client = generate_app
    fake.clear_failures()
    fake.fail_next(kind, delay=3) if kind == "slow" else fake.fail_next(kind)
    with pytest.raises(ClientAppError) as caught:
        _generate(client, fake.api_key)
    message = str(caught.value)
    assert message and "went wrong" not in message and "Traceback" not in message, message
    assert fake.api_key not in message
    assert len(message) < 600
    # Healthy afterwards: the next generation works, and so does detection of what it made.
    image, result, _ = _generate(client, fake.api_key)
    assert result["verdict"] in ("real", "fake", "uncertain") and result["generated"]["model"] == "gpt-image-2"


def test_openai_failure_messages_name_the_problem(generate_app):
    """Each kind of failure is told apart: the messages differ and say what happened."""
    from gradio_client.exceptions import AppError as ClientAppError

    fake, client = generate_app
    expected = {"invalid_key": r"key", "quota": r"quota|billing|credit", "rate_limit": r"rate|busy|too many|limit",
                "content_policy": r"safety|polic|refus", "slow": r"time|answer", "drop": r"connect|reach|answer|unavailable"}
    messages = {}
    for kind, pattern in expected.items():
        fake.clear_failures()
        fake.fail_next(kind, delay=3) if kind == "slow" else fake.fail_next(kind)
        with pytest.raises(ClientAppError) as caught:
            _generate(client, fake.api_key)
        messages[kind] = str(caught.value)
        assert re.search(pattern, messages[kind], re.I), (kind, messages[kind])
    assert len(set(messages.values())) == len(messages), messages


# --------------------------------------------------------------------------- Hub unreachable at start-up

def _launched_status(sources: str):
    from gradio_client import Client

    from benchmarks.loadtest import launch_local_app
    from fakeface.serving.models import ModelRegistry
    from fakeface.app.layout import build_app

    demo = build_app(ModelRegistry.from_env({"FAKEFACE_MODEL": sources}), environ={})
    url = launch_local_app(demo)
    client = Client(url, verbose=False, download_files=False)
    state, banner, *_ = client.predict(api_name="/status")
    return demo, url, client, state, banner


def test_hub_down_at_start_serves_the_cached_model_with_a_notice(hub, tmp_path):
    from gradio_client import handle_file

    from tests.test_hardening import save_tiny_model

    sha = push_detector(save_tiny_model(tmp_path / "tiny"), "org/detector")
    load_detector("org/detector")                     # a previous start cached it
    face = tmp_path / "face.png"
    _noise_png(face)
    with hub.offline():
        demo, url, client, state, banner = _launched_status("org/detector")
        try:
            [model] = state["models"]
            assert model["revision"] == sha and "cached" in model["notice"]
            assert model["notice"] in html.unescape(banner)
            result, _ = client.predict(handle_file(str(face)), False, False, api_name="/detect")
            assert result["verdict"] in ("real", "fake", "uncertain")
        finally:
            demo.close()


def test_hub_down_at_start_without_a_cached_copy_shows_a_clear_page(hub, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError as ClientAppError

    face = tmp_path / "face.png"
    _noise_png(face)
    with hub.offline():
        demo, url, client, state, banner = _launched_status("org/never-downloaded")
        try:
            assert state["models"] == [] and "could not be reached" in state["failures"][0]["problem"]
            text = html.unescape(banner)
            assert "org/never-downloaded" in text and "could not be reached" in text
            with urllib.request.urlopen(url, timeout=30) as page:
                assert page.status == 200                   # the page itself is up
            with pytest.raises(ClientAppError, match="No detector is available.*could not be reached"):
                client.predict(handle_file(str(face)), False, False, api_name="/detect")
        finally:
            demo.close()


def _noise_png(path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(path)
