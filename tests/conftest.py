"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from realtime_voicebot.testing import TIMEOUT_FACTOR_ENV
from tests.fake_harness import MakeServer, server_maker


def remove_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every VOICEBOT_/OpenAI/Azure variable but the test timeout factor, which is for
    the tests themselves."""
    for name in list(os.environ):
        if name != TIMEOUT_FACTOR_ENV and name.startswith(
            ("VOICEBOT_", "OPENAI_", "AZURE_OPENAI_")
        ):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def clean_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No VOICEBOT_/OpenAI/Azure variables and no .env from the developer's shell leak in."""
    remove_settings_from_env(monkeypatch)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """A test that configured logging (a CLI run) must not leave it pointing at a closed stream."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    """Fake servers for one test, stopped when it ends."""
    async with server_maker() as make:
        yield make
