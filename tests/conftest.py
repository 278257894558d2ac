"""Fixtures shared by the in-memory tests."""

import pytest

from tests.fakes import FakeProcessReactor


@pytest.fixture
def reactor():
    """A Clock that also spawns fake CLI processes (driven with recorded real output)."""
    return FakeProcessReactor()
