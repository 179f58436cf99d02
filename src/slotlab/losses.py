"""Losses as pure functions of named model outputs and targets.

- :func:`hungarian_huber_loss`: the set-prediction loss of the paper (official ``hungarian_huber_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from slotlab.matching import hungarian_match


def pad_targets(target: Tensor, num_slots: int) -> Tensor:
    """Pad a (B, M, P) target set with all-zero rows to (B, K, P); M > K is an error (an object would be lost)."""
    B, M, P = target.shape
    if M > num_slots:
        raise ValueError(f"the targets hold {M} objects but the model has only {num_slots} slots; use "
                         f"model.num_slots >= {M}")
    if M == num_slots:
        return target
    return torch.cat([target, target.new_zeros(B, num_slots - M, P)], dim=1)


def pairwise_huber(pred: Tensor, target: Tensor, delta: float = 1.0) -> Tensor:
    """Huber cost (Keras ``Huber``: mean over the P properties) of every (target i, prediction j) pair.

    pred (B, K, P), target (B, M, P) -> (B, M, K).
    """
    diff = F.huber_loss(pred[:, None, :, :].expand(-1, target.shape[1], -1, -1),
                        target[:, :, None, :].expand(-1, -1, pred.shape[1], -1),
                        reduction="none", delta=delta)  # (B, M, K, P)
    return diff.mean(dim=-1)


def hungarian_huber_loss(pred: Tensor, target: Tensor) -> Tensor:
    """The paper's set loss: Hungarian-match each scene on the Huber cost, sum the matched costs over the K pairs,
    average over the batch. Targets are padded with zero rows to K, so padding is matched too and unused slots
    learn to predict zeros (confidence 0 included).

    pred (B, K, P) in [0, 1]; target (B, M, P) with M <= K. Returns a scalar.
    """
    check_set_pair(pred, target)
    target = pad_targets(target.to(pred.dtype), pred.shape[1])  # (B, K, P)
    cost = pairwise_huber(pred, target)  # (B, K, K): rows targets, columns slots
    match = hungarian_match(cost)  # (B, K)
    matched = cost.gather(2, match[:, :, None])[..., 0]  # (B, K)
    return matched.sum(dim=1).mean()


def check_set_pair(pred: Tensor, target: Tensor) -> None:
    """Clear errors for set-prediction inputs of the wrong rank, width or batch, or non-finite values."""
    if pred.dim() != 3:
        raise ValueError(f"pred must be (B, K, P), got {tuple(pred.shape)}")
    if target.dim() != 3 or target.shape[0] != pred.shape[0] or target.shape[2] != pred.shape[2]:
        raise ValueError(f"target must be (B={pred.shape[0]}, M, P={pred.shape[2]}) like pred, "
                         f"got {tuple(target.shape)}")
    if not torch.isfinite(pred).all():
        raise ValueError("pred contains NaN or Inf (the model diverged or its input is not finite)")
    if not torch.isfinite(target).all():
        raise ValueError("target contains NaN or Inf")
