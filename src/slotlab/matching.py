"""Hungarian matching between predicted and target sets (Kuhn 1955; SciPy's ``linear_sum_assignment``).

The assignment is a discrete choice made outside the autograd graph, once per scene, on the detached cost; the
loss then differentiates the matched costs only. This is how the official set-prediction code does it (the
matching runs in NumPy, set_prediction/utils.py).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def hungarian_match(cost: Tensor) -> Tensor:
    """Minimum-cost assignment per scene: cost (B, M, K) with M <= K -> (B, M) int64 slot index for each target.

    Every target row gets a distinct slot; the sum of ``cost[b, i, match[b, i]]`` over i is minimal.
    """
    if cost.dim() != 3 or cost.shape[1] > cost.shape[2]:
        raise ValueError(f"cost must be (B, M, K) with M <= K (targets <= slots), got {tuple(cost.shape)}")
    table = cost.detach().to("cpu", torch.float64).numpy()
    out = np.empty(table.shape[:2], dtype=np.int64)
    for b, scene in enumerate(table):  # SciPy has no batched solver; 10x10 problems take microseconds each
        rows, cols = linear_sum_assignment(scene)
        out[b, rows] = cols
    return torch.from_numpy(out).to(cost.device)
