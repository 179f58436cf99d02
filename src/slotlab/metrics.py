"""Metrics as pure float64 functions: segmentation (ARI, FG-ARI, mean best overlap) and set prediction (AP).

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

import math

import numpy as np
import torch
from torch import Tensor

from slotlab.set_layout import CLEVR_LAYOUT, SetLayout


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


def mbo(true_masks: Tensor, pred_masks: Tensor, num_background: int = 1, valid: Tensor | None = None) -> Tensor:
    """Mean best overlap: for each true object present (background excluded), the best IoU with any hard
    predicted mask, averaged over the scene's objects. (B,) float64; NaN for a scene without objects.

    ``valid`` (B, H, W) bool: pixels outside it are removed from the predictions and the truth before the IoUs
    (the DINOSAUR protocol's ignore rule: overlapping instances, VOC's 255 border)."""
    true, hard = _prepare(true_masks, pred_masks)
    if valid is not None:
        keep = valid.reshape(hard.shape[0], -1, 1).to(torch.float64)  # (B, P, 1)
        true, hard = true * keep, hard * keep
    true = true[..., num_background:]  # (B, P, G')
    inter = torch.einsum("bpg,bpk->bgk", true, hard)  # (B, G', K)
    union = true.sum(1)[:, :, None] + hard.sum(1)[:, None, :] - inter
    iou = inter / union.clamp(min=1)
    best = iou.max(dim=2).values  # (B, G')
    present = true.sum(1) > 0  # (B, G')
    count = present.sum(1).to(torch.float64)
    total = (best * present).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def labels_to_masks(labels: Tensor) -> Tensor:
    """A label map (B, H, W) of ints, 0 = background, < 0 = ignore, 1..G = objects -> (B, G, H, W) float one-hot
    masks of the objects only (background and ignored pixels all-zero, so ARI leaves them out: FG-ARI). The ids
    present are renumbered 1..G first (sparse ids such as COCO's category ids would waste memory)."""
    labels = labels.long()
    ids = torch.unique(labels[labels > 0])  # (G,) sorted
    compact = torch.where(labels > 0, torch.searchsorted(ids, labels) + 1, 0)  # (B, H, W) in 0..G
    onehot = torch.nn.functional.one_hot(compact, len(ids) + 1)[..., 1:]  # (B, H, W, G)
    return onehot.permute(0, 3, 1, 2).to(torch.float32)


def mse(image: Tensor, recon: Tensor) -> Tensor:
    """Per-image mean squared error in the model's [-1, 1] range: (B,) float64."""
    return ((image.detach().double() - recon.detach().double()) ** 2).flatten(1).mean(1)


# ---------------------------------------------------------------------------------------------------------------
# Video (SAVi, Kipf et al. ICLR 2022: the ARI of a video counts all pixels of all frames at once)


def _video_as_image(masks: Tensor) -> Tensor:
    """(B, F, G, H, W) or (B, F, G, 1, H, W) -> (B, G, F * H, W): the frames stacked as one tall image, so that a
    slot is one cluster across time."""
    if masks.dim() == 6 and masks.shape[3] == 1:
        masks = masks[:, :, :, 0]
    if masks.dim() != 5:
        raise ValueError(f"video masks must be (B, F, G, H, W), got {tuple(masks.shape)}")
    B, F, G, H, W = masks.shape
    return masks.transpose(1, 2).reshape(B, G, F * H, W)


def video_ari(true_masks: Tensor, pred_masks: Tensor) -> Tensor:
    """ARI over all pixels of all frames, background included: (B,) float64."""
    return ari(_video_as_image(true_masks), _video_as_image(pred_masks))


def video_fg_ari(true_masks: Tensor, pred_masks: Tensor, num_background: int = 1) -> Tensor:
    """FG-ARI over all foreground pixels of all frames at once: a slot that moves from one object to another
    mid-video splits that cluster and is penalised, unlike :func:`per_frame_fg_ari`. (B,) float64."""
    return fg_ari(_video_as_image(true_masks), _video_as_image(pred_masks), num_background)


def per_frame_fg_ari(true_masks: Tensor, pred_masks: Tensor, num_background: int = 1) -> Tensor:
    """FG-ARI of each frame on its own, averaged over the frames that have foreground: (B,) float64."""
    true, pred = _video_as_image(true_masks), _video_as_image(pred_masks)  # validates both
    B, F = true_masks.shape[:2]
    frames = lambda m: m.reshape(B, m.shape[1], F, -1, m.shape[-1]).transpose(1, 2).flatten(0, 1)  # noqa: E731
    scores = fg_ari(frames(true), frames(pred), num_background).reshape(B, F)  # (B, F)
    return scores.nanmean(dim=1)


def video_mbo(true_masks: Tensor, pred_masks: Tensor, num_background: int = 1) -> Tensor:
    """Mean best overlap of spatio-temporal masks: each object's IoU over the whole video with its best slot.
    (B,) float64."""
    return mbo(_video_as_image(true_masks), _video_as_image(pred_masks), num_background)


# ---------------------------------------------------------------------------------------------------------------
# Set prediction


AP_THRESHOLDS = (None, 1.0, 0.5, 0.25, 0.125)  # the paper's distance thresholds; None = infinity


def mean_and_sem(per_item: dict[str, list[Tensor]]) -> dict[str, float]:
    """Per-item values, each key a list of (B,) tensors -> ``{key: mean, key_sem: standard error of the mean}``
    over the items that are not NaN (mean NaN without any, standard error NaN below two)."""
    result: dict[str, float] = {}
    for key, values in per_item.items():
        v = torch.cat(values) if values else torch.empty(0)
        v = v[~torch.isnan(v)]
        result[key] = float(v.mean()) if len(v) else float("nan")
        result[f"{key}_sem"] = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return result


def average_precision(pred, target, threshold: float | None = None, layout: SetLayout = CLEVR_LAYOUT) -> float:
    """Average precision of set predictions at a distance threshold, as the official ``average_precision_clevr``.

    pred: (B, K, P) predictions, target: (B, M, P) targets (rows with flag 0 are padding), NumPy or torch, in the
    layout ``layout`` (default: CLEVR's 19 columns; see :mod:`slotlab.set_layout`). ``threshold``: a distance in
    the layout's original units (CLEVR: [-3, 3]); ``None`` or ``-1`` means infinity (attributes only).

    The procedure (official set_prediction ``utils.average_precision_clevr``):
    1. all B*K predictions, ordered by confidence (the flag column) from high to low (ties keep their order);
    2. each prediction's classes are the argmax of every categorical block; among the *real* targets of the same
       scene whose classes **all** match, take the nearest (Euclidean distance of the coordinates times
       ``layout.coord_scale``); no fallback to the second nearest;
    3. a true positive iff that distance is strictly below the threshold and that target is not yet claimed;
       otherwise a false positive;
    4. precision/recall over the ranked list (recall over all real targets), then VOC all-point interpolation:
       recall 0 and 1 appended with precision 0, precision made non-increasing from the right, summed over the
       points where recall changes.
    Returns a float in [0, 1]. Raises ValueError on wrong shapes, non-finite predictions or no real target.
    """
    pred, target = _set_arrays(pred, target, layout)
    if threshold is None or threshold == -1:
        limit = math.inf
    elif isinstance(threshold, (int, float)) and threshold > 0:
        limit = float(threshold)
    else:
        raise ValueError(f"threshold must be > 0, or None / -1 for infinity; got {threshold!r}")
    B, K, _ = pred.shape
    real = target[..., layout.flag] > 0.5  # (B, M)
    num_real = int(real.sum())
    if num_real == 0:
        raise ValueError("average_precision: the targets hold no real object (flag column all 0); AP is undefined")
    a, b = layout.coords
    pred_classes = np.stack([pred[..., s:e].argmax(-1) for _, s, e, _ in layout.blocks], -1)  # (B, K, A)
    true_classes = np.stack([target[..., s:e].argmax(-1) for _, s, e, _ in layout.blocks], -1)  # (B, M, A)
    order = np.argsort(-pred[..., layout.flag].reshape(-1), kind="stable")  # (B*K,) most confident first
    claimed = np.zeros(real.shape, dtype=bool)  # (B, M)
    hit = np.zeros(len(order), dtype=bool)
    for rank, flat in enumerate(order):
        scene, k = divmod(int(flat), K)
        same = real[scene] & (true_classes[scene] == pred_classes[scene, k]).all(-1)  # (M,)
        if not same.any():
            continue
        distance = np.linalg.norm((target[scene, :, a:b] - pred[scene, k, a:b]) * layout.coord_scale, axis=-1)
        best = int(np.where(same, distance, np.inf).argmin())
        if distance[best] < limit and not claimed[scene, best]:
            claimed[scene, best] = True
            hit[rank] = True
    tp = np.cumsum(hit)
    fp = np.cumsum(~hit)
    return _voc_ap(tp / num_real, tp / np.maximum(tp + fp, 1))


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP from a ranked list's recall and precision (VOC style)."""
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # non-increasing from the right
    changes = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[changes] - recall[changes - 1]) * precision[changes]))


def _set_arrays(pred, target, layout: SetLayout) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to float64 NumPy (B, K, P) and (B, M, P)."""
    pred = (pred.detach().cpu().double().numpy() if isinstance(pred, Tensor) else np.asarray(pred, np.float64))
    target = (target.detach().cpu().double().numpy() if isinstance(target, Tensor)
              else np.asarray(target, np.float64))
    P = layout.width
    if pred.ndim != 3 or pred.shape[-1] != P:
        raise ValueError(f"pred must be (B, K, {P}) in the {layout.name} layout, got {pred.shape}")
    if target.ndim != 3 or target.shape[-1] != P or target.shape[0] != pred.shape[0]:
        raise ValueError(f"target must be (B={pred.shape[0]}, M, {P}) in the {layout.name} layout, "
                         f"got {target.shape}")
    if not np.isfinite(pred).all():
        raise ValueError("pred contains NaN or Inf")
    if not np.isfinite(target).all():
        raise ValueError("target contains NaN or Inf")
    return pred, target


def average_precisions(pred, target, layout: SetLayout = CLEVR_LAYOUT) -> dict[str, float]:
    """AP at the paper's five thresholds: keys ``ap_inf``, ``ap_1``, ``ap_0.5``, ``ap_0.25``, ``ap_0.125``."""
    pred, target = _set_arrays(pred, target, layout)
    return {f"ap_{'inf' if t is None else f'{t:g}'}": average_precision(pred, target, t, layout)
            for t in AP_THRESHOLDS}
