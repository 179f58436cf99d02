import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp, or it has no effect

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated datasets go to a per-session temporary cache, never the user's ~/.cache."""
    monkeypatch.setenv("SLOTLAB_CACHE", str(tmp_path_factory.getbasetemp() / "slotlab-cache"))
