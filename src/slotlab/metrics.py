"""Segmentation metrics: ARI, FG-ARI and mean best overlap (mBO). Pure, batched, float64 functions.

Conventions (the multi_object_datasets ones):
- ``true_masks``: (B, G, H, W) one-hot ground truth, index 0 = background (Objects Room: indices 0-3).
  Values are {0, 1}; raw dataset masks in {0, 255} must be divided by 255 first (we check).
- ``pred_masks``: (B, K, H, W) soft or hard predictions; each pixel goes to its argmax slot (ties -> lowest index,
  as ``tf.argmax``). A singleton channel axis, (B, K, 1, H, W), is accepted too.

ARI follows DeepMind's ``segmentation_metrics.adjusted_rand_index``: contingency counts n_ij between true groups
and predicted slots over the *labelled* pixels (pixels whose true row is all zero are ignored, which is how
FG-ARI drops the background). Degenerate cases: when the denominator is 0 (both partitions are a single group,
or both are all singletons) the partitions agree and ARI = 1, as scikit-learn returns; a scene with fewer than 2
labelled pixels has no defined ARI and gives NaN (aggregate with ``nanmean``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _prepare(true_masks: Tensor, pred_masks: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and flatten to (B, P, G) float64 true one-hot and (B, P, K) float64 hard predictions."""
    if pred_masks.dim() == 5 and pred_masks.shape[2] == 1:
        pred_masks = pred_masks[:, :, 0]
    if true_masks.dim() == 5 and true_masks.shape[2] == 1:
        true_masks = true_masks[:, :, 0]
    if true_masks.dim() != 4 or pred_masks.dim() != 4:
        raise ValueError(
            f"masks must be (B, G, H, W) and (B, K, H, W); got {tuple(true_masks.shape)} and {tuple(pred_masks.shape)}"
        )
    if true_masks.shape[0] != pred_masks.shape[0] or true_masks.shape[2:] != pred_masks.shape[2:]:
        raise ValueError(
            f"true and predicted masks disagree on batch or image size: {tuple(true_masks.shape)} vs "
            f"{tuple(pred_masks.shape)}"
        )
    true = true_masks.detach().to(torch.float64).flatten(2).transpose(1, 2)  # (B, P, G)
    if true.numel() and (true.max() > 1 or true.min() < 0):
        raise ValueError("true_masks must be one-hot in {0, 1} (divide raw 0/255 masks by 255)")
    if true.numel() and (true.sum(-1) > 1 + 1e-6).any():
        raise ValueError("true_masks must be one-hot: some pixel belongs to more than one group")
    pred = pred_masks.detach().flatten(2)  # (B, K, P)
    if not torch.isfinite(pred).all():
        raise ValueError("pred_masks contain NaN or Inf")
    hard = torch.nn.functional.one_hot(pred.argmax(dim=1), pred.shape[1]).to(torch.float64)  # (B, P, K)
    return true, hard


def _ari(true: Tensor, hard: Tensor) -> Tensor:
    """ARI from (B, P, G) one-hot truth (all-zero rows ignored) and (B, P, K) one-hot predictions -> (B,)."""
    hard = hard * true.sum(-1, keepdim=True)  # drop unlabelled pixels from the predictions too
    nij = torch.einsum("bpg,bpk->bgk", true, hard)  # (B, G, K) contingency table
    a = nij.sum(dim=1)  # (B, K) predicted-cluster sizes
    b = nij.sum(dim=2)  # (B, G) true-group sizes
    n = b.sum(dim=1)  # (B,) labelled pixels
    rindex = (nij * (nij - 1)).sum(dim=(1, 2))
    aindex = (a * (a - 1)).sum(dim=1)
    bindex = (b * (b - 1)).sum(dim=1)
    pairs = n * (n - 1)
    expected = aindex * bindex / pairs.clamp(min=1)
    maximum = (aindex + bindex) / 2
    denom = maximum - expected
    ari = (rindex - expected) / torch.where(denom == 0, torch.ones_like(denom), denom)
    ari = torch.where(denom == 0, torch.ones_like(ari), ari)
    return torch.where(n < 2, torch.full_like(ari, float("nan")), ari)


def ari(true_masks: Tensor, pred_masks: Tensor) -> Tensor:
    """Adjusted Rand index over all pixels, background included: (B,) float64."""
    true, hard = _prepare(true_masks, pred_masks)
    return _ari(true, hard)


def fg_ari(true_masks: Tensor, pred_masks: Tensor, num_background: int = 1) -> Tensor:
    """Foreground ARI (the paper's "ARI"): background pixels ignored, predictions keep every slot. (B,) float64.

    ``num_background``: leading ground-truth masks that are background (1; Objects Room: 4).
    """
    true, hard = _prepare(true_masks, pred_masks)
    return _ari(true[..., num_background:], hard)


def mbo(true_masks: Tensor, pred_masks: Tensor, num_background: int = 1) -> Tensor:
    """Mean best overlap: for each true object present (background excluded), the best IoU with any hard
    predicted mask, averaged over the scene's objects. (B,) float64; NaN for a scene without objects."""
    true, hard = _prepare(true_masks, pred_masks)
    true = true[..., num_background:]  # (B, P, G')
    inter = torch.einsum("bpg,bpk->bgk", true, hard)  # (B, G', K)
    union = true.sum(1)[:, :, None] + hard.sum(1)[:, None, :] - inter
    iou = inter / union.clamp(min=1)
    best = iou.max(dim=2).values  # (B, G')
    present = true.sum(1) > 0  # (B, G')
    count = present.sum(1).to(torch.float64)
    total = (best * present).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def mse(image: Tensor, recon: Tensor) -> Tensor:
    """Per-image mean squared error in the model's [-1, 1] range: (B,) float64."""
    return ((image.detach().double() - recon.detach().double()) ** 2).flatten(1).mean(1)
