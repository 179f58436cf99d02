"""Evaluation of the features task (DINOSAUR) with the protocol of the official code (Seitzer et al., ICLR 2023;
amazon-science/object-centric-learning-framework, ``configs/evaluation/projects/bridging``):

- the predicted alpha masks (B, K, N) on the patch grid are upsampled bilinearly to the ground truth's resolution
  S (320 for COCO and VOC), then each pixel goes to its argmax slot;
- FG-ARI over the instance masks: background pixels carry no label and are left out; so are ignored pixels
  (overlapping instances, VOC's 255 border);
- mBO over instances (``mbo``) and over classes (``mbo_c``, instances of one category merged): for each object the
  best IoU with any predicted mask, ignored pixels removed from both, averaged over the image's objects, then
  over the images that have objects;
- ``mse``: the feature reconstruction error (the training loss).
"""

from __future__ import annotations

import torch
from torch import nn

from slotlab import metrics
from slotlab.evaluate import evaluation
from slotlab.nn.dinosaur import masks_to_image
from slotlab.nn.precision import autocast
from slotlab.noise import feature_seeds, seeded_initial_slots


def scene_metrics(masks: torch.Tensor, instances: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Soft masks (B, K, S, S) and int label maps (B, S, S) -> per-image FG-ARI, mBO and class mBO, (B,) float64
    each (NaN where an image has no labelled object)."""
    out = {"fg_ari": [], "mbo": [], "mbo_c": []}
    for b in range(len(masks)):  # one image at a time: its own few objects (memory stays small)
        pred = masks[b:b + 1]
        inst = metrics.labels_to_masks(instances[b:b + 1])  # (1, G, S, S), background and ignored all-zero
        cls = metrics.labels_to_masks(classes[b:b + 1])
        out["fg_ari"].append(metrics.ari(inst, pred))
        out["mbo"].append(metrics.mbo(inst, pred, num_background=0, valid=instances[b:b + 1] >= 0))
        out["mbo_c"].append(metrics.mbo(cls, pred, num_background=0, valid=classes[b:b + 1] >= 0))
    return {k: torch.cat(v) for k, v in out.items()}


@torch.no_grad()
def evaluate_features(model: nn.Module, data, *, batch_size: int = 64, num_slots: int | None = None,
                      num_iters: int | None = None, seed: int = 0, limit: int | None = None,
                      precision: str = "fp32") -> dict[str, float]:
    """Mean FG-ARI, mBO, class mBO and feature MSE over (the first ``limit`` items of) ``data`` (a FeatureSplit),
    with standard errors; each item's initial-slot noise seeded from ``seed`` and its features
    (:func:`slotlab.noise.feature_seeds`), so the scores do not depend on the batch size."""
    n = len(data) if limit is None else min(limit, len(data))
    per_scene: dict[str, list[torch.Tensor]] = {"fg_ari": [], "mbo": [], "mbo_c": [], "mse": []}
    with evaluation(model, seed) as device:
        for start in range(0, n, batch_size):
            batch = data.batch(slice(start, min(start + batch_size, n)), with_targets=True)
            features = batch["features"].to(device)
            slots = None
            if model.slot_attention.slot_init == "random":  # each item's noise from its own values: batch-free
                seeds = feature_seeds(features, seed)
                slots = seeded_initial_slots(model.slot_attention, seeds, num_slots).to(device)
            with autocast(precision, device):
                out = model(features, num_slots=num_slots, num_iters=num_iters, slots=slots)
            mse = ((out["recon"].double() - features.double()) ** 2).flatten(1).mean(1).cpu()
            per_scene["mse"].append(mse)
            masks = masks_to_image(out["masks"].float().cpu(), batch["instances"].shape[-1])
            for key, value in scene_metrics(masks, batch["instances"], batch["classes"]).items():
                per_scene[key].append(value)
    return {"num_scenes": n, **metrics.mean_and_sem(per_scene)}


def format_feature_metrics(result: dict[str, float]) -> str:
    """One line: FG-ARI, mBO (instances), mBO (classes) in percent and the feature MSE."""
    return (f"FG-ARI {100 * result['fg_ari']:.1f}  mBO {100 * result['mbo']:.1f}  mBO_c {100 * result['mbo_c']:.1f}"
            f"  MSE {result['mse']:.5f}  ({int(result['num_scenes'])} images)")

