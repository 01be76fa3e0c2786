"""Fixtures for the recogniser tests."""

from __future__ import annotations

import pytest

from guardproxy.recognise import RecogniseSettings
from guardproxy.recognise.providers.aws.index import AwsIndex, load_index


@pytest.fixture(scope="session")
def aws_index() -> AwsIndex:
    """The AWS model index, loaded once (built and cached on the first run)."""
    return load_index()


@pytest.fixture
def settings() -> RecogniseSettings:
    return RecogniseSettings()
