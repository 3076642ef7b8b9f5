"""Pytest fixtures for the loopback OpenAI fake (see :mod:`tests.fakes.openai_server`).

``openai_fake`` starts a fresh :class:`~tests.fakes.openai_server.FakeOpenAI` for one
test, sets ``OPENAI_BASE_URL`` to it (so code that reads the environment, like the
app, talks to the fake) and yields it; ``.base_url`` ends in ``/v1`` and
``.api_key`` is the one key it accepts. ``OPENAI_API_KEY`` is *not* set: tests
that want it in the environment use ``openai_env``.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def openai_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A running fake OpenAI images API that ``OPENAI_BASE_URL`` points at."""
    server = FakeOpenAI().start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openai_env(openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """``openai_fake`` with its key also in ``OPENAI_API_KEY``."""
    monkeypatch.setenv("OPENAI_API_KEY", openai_fake.api_key)
    return openai_fake
