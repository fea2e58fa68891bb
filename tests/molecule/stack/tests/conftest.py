"""Tests marked `fault` stop, kill or freeze parts of the stack: they run after every other test."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: breaks part of the stack and waits until it is back; runs last")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("fault") is not None)
