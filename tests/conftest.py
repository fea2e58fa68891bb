"""Shared paths and loaders for the project's tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def catalog_plugin() -> ModuleType:
    return load_module(ROOT / "roles" / "catalog" / "filter_plugins" / "catalog.py")


@pytest.fixture(scope="session")
def catalog_defaults() -> dict:
    return yaml.safe_load((ROOT / "roles" / "catalog" / "defaults" / "main.yml").read_text())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Molecule scenarios first: they are the long tests, and started first on the two
    pytest-xdist workers (tests/run.sh) they finish closer together."""
    items.sort(key=lambda item: item.get_closest_marker("molecule") is None)
