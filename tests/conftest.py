"""Shared fixtures: tiny models with planted BatchNorm values, and the bundled demo checkpoint."""

from __future__ import annotations

import os

import pytest
import torch

from tests.models import TinyNet, plant

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return plant(TinyNet())


@pytest.fixture(scope="session")
def demo_path():
    import yolobn

    p = yolobn.demo_model_path()
    assert p.is_file(), f"bundled demo model missing: {p} (run scripts/train_demo.py)"
    return p
