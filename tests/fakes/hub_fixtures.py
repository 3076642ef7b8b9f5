"""Pytest fixtures that run the real Hub clients against the loopback fake Hub.

``hub`` starts a fresh :class:`~tests.fakes.hub_server.FakeHub` for one test (a new
port, so no client-side cache such as ``HfFileSystem``'s instance cache can carry
state between tests), points ``huggingface_hub``, ``datasets`` (and through them
``timm`` and ``transformers``) at it, gives a dummy ``HF_TOKEN`` and a private
``HF_HOME`` / hub cache / datasets cache under ``tmp_path``, and yields the server.
Everything is undone after the test.
"""
from __future__ import annotations

import os
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.hub_server import FakeHub

# Offline switches a developer may have exported; the fake must be reachable.
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def point_clients_at_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point every Hub client at ``hub`` with ``home`` as HF_HOME, undone by ``monkeypatch``.

    The clients read these settings at import, so besides the environment (for modules
    imported later) the module-level copies are patched too, as datasets' own
    ``ci_hub_config`` fixture does.
    """
    import huggingface_hub.constants as hf_constants

    hf_home = home / "hf"
    hub_cache = hf_home / "hub"
    datasets_cache = hf_home / "datasets"
    for folder in (hub_cache, datasets_cache):
        folder.mkdir(parents=True, exist_ok=True)

    env = {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": hub.token,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_DATASETS_CACHE": str(datasets_cache),
        "HF_HUB_DISABLE_XET": "1",  # otherwise uploads/downloads go through a xet server
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in _OFFLINE_VARS + ("HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)

    hf_settings = {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        # Hosts that get the auth header forwarded on redirects.
        "HF_URL_HOSTS": frozenset(hf_constants.HF_URL_HOSTS | {hub.host}),
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
    }
    for name, value in hf_settings.items():
        if hasattr(hf_constants, name):
            monkeypatch.setattr(hf_constants, name, value)
    cache_manager = sys.modules.get("huggingface_hub.utils._cache_manager")
    if cache_manager is not None and hasattr(cache_manager, "HF_HUB_CACHE"):
        monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", str(hub_cache))

    # datasets is heavy to import: patch it only if loaded; if a test imports it later it
    # reads the environment set above.
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_settings = {
            "HF_ENDPOINT": hub.url,
            "HUB_DATASETS_URL": hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_CACHE_HOME": str(hf_home),
            "HF_DATASETS_CACHE": datasets_cache,
            "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
            "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
            "HF_MODULES_CACHE": hf_home / "modules",
            "HF_HUB_OFFLINE": False,
            "HF_DATASETS_OFFLINE": False,
        }
        for name, value in datasets_settings.items():
            if hasattr(datasets_config, name):
                monkeypatch.setattr(datasets_config, name, value)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running fake Hub that all Hub clients talk to; ``.url``, ``.token``, ``.requests``..."""
    server = FakeHub().start()
    point_clients_at_hub(server, monkeypatch, tmp_path / "hf-home")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def anonymous_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake Hub with no token in the environment (anonymous client)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert "HF_TOKEN" not in os.environ
    return hub


@pytest.fixture
def instant_hub_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make huggingface_hub's retry back-off (1, 2, 4, 8, 8 s on 5xx / connection errors) instant.

    Returns the list of waits the client asked for, so a test can assert it retried.
    Only the ``time`` seen by huggingface_hub's HTTP helpers is replaced.
    """
    import huggingface_hub.file_download
    import huggingface_hub.utils._http

    waits: list[float] = []
    for module in (huggingface_hub.utils._http, huggingface_hub.file_download):
        shim = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
        shim.sleep = waits.append
        monkeypatch.setattr(module, "time", shim)
    return waits
