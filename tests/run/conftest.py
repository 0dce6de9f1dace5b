"""Fixtures for the run-layer tests."""

from __future__ import annotations

import pytest

from plan_configs import Configs


@pytest.fixture
def configs() -> type[Configs]:
    return Configs
