import os

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated datasets go to a per-session temporary cache, never the user's ~/.cache."""
    monkeypatch.setenv("SLOTLAB_CACHE", str(tmp_path_factory.getbasetemp() / "slotlab-cache"))
