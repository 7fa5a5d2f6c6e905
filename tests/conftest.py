"""Shared test configuration."""

from __future__ import annotations

import os

import pytest
import torch

# Keep CPU tests deterministic and small on the 2-core CI machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
