import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cifar10_jpeg():
    """The CIFAR-10 JPEG copy unpacked (train/ and test/), from $CFAMC_CIFAR10_JPEG; skips when absent."""
    path = os.environ.get("CFAMC_CIFAR10_JPEG")
    if not path or not (Path(path) / "train").is_dir():
        pytest.skip("real data not available: set CFAMC_CIFAR10_JPEG to an unpacked CIFAR-10 image folder")
    return Path(path)
