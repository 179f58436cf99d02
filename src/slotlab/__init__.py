"""slotlab: Slot Attention (Locatello et al., NeurIPS 2020) for object-centric learning.

The few names most users need::

    from slotlab import SetPredictor, SlotAttention, SlotAttentionAutoEncoder, get_experiment, metrics
    model = slotlab.load("tetrominoes")   # a trained model (zoo name or run directory); model.segment(images)
"""

import os

# OpenMP threads that spin at barriers collapse when another process holds a core (measured: 25x slower at 2
# threads); passive waiting avoids it. libgomp reads this when torch loads it, so it must be set before the first
# `import torch`: here, because `slotlab.cli` (the console script) imports this package, and with it torch, first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# PyTorch backs CPU tensors of 2 MB and more with transparent huge pages when this is set (read once, at its first
# allocation): a training step allocates hundreds of MB of fresh activations, and 4 KB page faults on them cost
# 5-8% of a step on the paper presets (docs/performance.md). A large tensor may occupy up to 2 MB more.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from slotlab import metrics  # noqa: E402
from slotlab.api import load  # noqa: E402
from slotlab.experiments import get_experiment  # noqa: E402
from slotlab.nn.models import SetPredictor, SlotAttentionAutoEncoder  # noqa: E402
from slotlab.nn.slot_attention import SlotAttention  # noqa: E402

__all__ = ["SetPredictor", "SlotAttention", "SlotAttentionAutoEncoder", "get_experiment", "load", "metrics"]
__version__ = "0.1.0"
