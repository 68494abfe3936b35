"""Shared test settings: paths to the optional ../shared material and a marker that skips without it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "yolov5-v7.0"
DATASETS = SHARED / "datasets"


def need(path: Path) -> Path:
    """Skip the calling test unless `path` exists (the shared fixtures and datasets are optional)."""
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def log(caplog):
    """caplog wired to the project logger (which does not propagate to the root logger)."""
    from utils.log import LOGGER

    LOGGER.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    yield caplog
    LOGGER.removeHandler(caplog.handler)
