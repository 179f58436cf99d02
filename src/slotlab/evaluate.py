"""Evaluation on a split: object discovery (FG-ARI, ARI with background, mBO, MSE) and set prediction (AP).

Slot Attention draws fresh initial slots on every call, so evaluation is stochastic; each scene's draw is seeded
from ``seed`` and the scene's pixels (``slotlab.noise``), so numbers are reproducible and do not depend on the
batch size, the order of the scenes or the device (the caller's random state is left untouched).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from slotlab import metrics
from slotlab.data import SceneSet
from slotlab.nn.precision import autocast
from slotlab.noise import seeded_forward


@contextmanager
def evaluation(model: nn.Module, seed: int) -> Iterator[torch.device]:
    """The body runs with ``model`` in eval mode and the global RNG seeded by ``seed`` in a fork; the caller's
    random state and the model's train/eval mode are restored. Yields the model's device (the CPU for a model
    without parameters)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield device
    finally:
        model.train(was_training)


@torch.no_grad()
def _model_batches(model: nn.Module, data, n: int, batch_size: int, seed: int, precision: str,
                   num_slots: int | None, num_iters: int | None) -> Iterator[tuple[dict, dict]]:
    """(batch, model outputs) over the first ``n`` scenes, in :func:`evaluation`, with each scene's initial-slot
    noise seeded from ``seed`` and its pixels."""
    with evaluation(model, seed) as device:
        for start in range(0, n, batch_size):
            batch = data.batch(slice(start, min(start + batch_size, n)))
            if device.type == "cuda":  # CUDA graphs (compile_mode="reduce-overhead") reuse output memory
                torch.compiler.cudagraph_mark_step_begin()
            with autocast(precision, device):
                out = seeded_forward(model, batch["image"].to(device), seed, num_slots, num_iters)
            if device.type != "cpu":  # the metrics (and the Hungarian matching) run on the CPU
                out = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
            yield batch, out


@torch.no_grad()
def evaluate(model: nn.Module, data: SceneSet, *, batch_size: int = 64, num_slots: int | None = None,
             num_iters: int | None = None, seed: int = 0, limit: int | None = None,
             precision: str = "fp32") -> dict[str, float]:
    """Mean FG-ARI, ARI, mBO and MSE over (the first ``limit`` scenes of) ``data``; also their standard errors.
    Data without ground-truth masks (a folder of images without ``masks/``) gets MSE only (the others NaN).

    ``precision="bf16"`` runs the forward under bf16 autocast (:mod:`slotlab.nn.precision`); metrics stay float64.
    """
    per_scene: dict[str, list[torch.Tensor]] = {"fg_ari": [], "ari": [], "mbo": [], "mse": []}
    n = len(data) if limit is None else min(limit, len(data))
    background = getattr(data, "num_background", 1)  # Objects Room: 4 background masks
    for batch, out in _model_batches(model, data, n, batch_size, seed, precision, num_slots, num_iters):
        per_scene["mse"].append(metrics.mse(batch["image"], out["recon"]))
        if "masks" not in batch:
            continue
        per_scene["fg_ari"].append(metrics.fg_ari(batch["masks"], out["masks"], num_background=background))
        per_scene["ari"].append(metrics.ari(batch["masks"], out["masks"]))
        per_scene["mbo"].append(metrics.mbo(batch["masks"], out["masks"], num_background=background))
    return {"num_scenes": n, **metrics.mean_and_sem(per_scene)}


def format_metrics(result: dict[str, float]) -> str:
    """One human-readable line: FG-ARI, ARI, mBO (percent) and MSE."""
    if math.isnan(result["ari"]):  # no ground-truth masks
        return f"MSE {result['mse']:.5f}  ({int(result['num_scenes'])} scenes; no masks, so no FG-ARI / ARI / mBO)"
    return (f"FG-ARI {100 * result['fg_ari']:.1f}  ARI {100 * result['ari']:.1f}  mBO {100 * result['mbo']:.1f}  "
            f"MSE {result['mse']:.5f}  ({int(result['num_scenes'])} scenes)")


@torch.no_grad()
def evaluate_set(model: nn.Module, data, *, batch_size: int = 64, num_slots: int | None = None,
                 num_iters: int | None = None, seed: int = 0, limit: int | None = None,
                 precision: str = "fp32") -> dict[str, float]:
    """Set prediction on ``data`` (a SetScenes): AP at the paper's five thresholds and the mean Hungarian loss.
    ``precision`` as for :func:`evaluate`."""
    from slotlab.losses import hungarian_huber_loss
    from slotlab.set_layout import get_layout

    n = len(data) if limit is None else min(limit, len(data))
    preds, targets, losses = [], [], []
    for batch, out in _model_batches(model, data, n, batch_size, seed, precision, num_slots, num_iters):
        losses.append(hungarian_huber_loss(out["pred"], batch["target"]).item() * len(out["pred"]))
        preds.append(out["pred"])
        targets.append(batch["target"])
    result: dict[str, float] = {"num_scenes": n, "loss": sum(losses) / n}
    result.update(metrics.average_precisions(torch.cat(preds), torch.cat(targets), get_layout(data.layout)))
    result["ap_mean"] = sum(v for k, v in result.items() if k.startswith("ap_")) / len(metrics.AP_THRESHOLDS)
    return result


def format_set_metrics(result: dict[str, float]) -> str:
    """One line: AP (percent) at each threshold and the loss."""
    aps = "  ".join(f"AP{key[3:]} {100 * result[key]:.1f}" for key in
                    ("ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125"))
    return f"{aps}  loss {result['loss']:.4f}  ({int(result['num_scenes'])} scenes)"
