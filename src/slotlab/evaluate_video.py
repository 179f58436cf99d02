"""Evaluation of video models on whole videos: video FG-ARI (all pixels of all frames at once, so a slot that swaps
objects is penalised, as in SAVi), video ARI with the background, per-frame FG-ARI, video mBO and the
reconstruction MSE. Metrics are float64 (slotlab.metrics); the initial-slot draw is fixed by ``seed`` in a forked RNG.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slotlab import metrics
from slotlab.evaluate import evaluation
from slotlab.nn.precision import autocast

EVAL_BATCH_CAP = 8  # whole videos per forward: a 24-frame video decodes F * K full-resolution layers


def video_inputs(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The keyword arguments of a video model's forward for ``batch``: the video and, for a conditional model, the
    first-frame signal it was configured with (``batch["centers"]`` or ``batch["boxes"]``)."""
    conditioning = model.cfg.conditioning
    if conditioning == "learned":
        return {"video": batch["video"]}
    if conditioning not in batch:
        raise ValueError(f"model.conditioning={conditioning!r} but the batch has no {conditioning!r}")
    return {"video": batch["video"], "conditioning": batch[conditioning]}


def video_target(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """What the model reconstructs: the frames (B, F, 3, H, W), or the flow as a colour-wheel picture."""
    if model.cfg.target == "rgb":
        return batch["video"]
    from slotlab.data.video import flow_to_rgb

    if "flow" not in batch:
        raise ValueError("model.target='flow' needs optical flow in the data; this dataset has none")
    return flow_to_rgb(batch["flow"], model.cfg.flow_max_magnitude)


@torch.no_grad()
def evaluate_video(model: nn.Module, data, *, batch_size: int = EVAL_BATCH_CAP, seed: int = 0,
                   limit: int | None = None, precision: str = "fp32", num_slots: int | None = None,
                   num_iters: int | None = None) -> dict[str, float]:
    """Mean video FG-ARI, video ARI, per-frame FG-ARI, video mBO and MSE (with standard errors) over the first
    ``limit`` videos of ``data`` (a VideoSet of whole videos). At most EVAL_BATCH_CAP videos go through at once.
    ``num_slots`` / ``num_iters`` must stay None: SAVi runs with the K and iterations it was trained with."""
    if num_slots is not None or num_iters is not None:
        raise ValueError("video evaluation uses the model's own model.num_slots and model.num_iters; drop "
                         "--num-slots / --num-iters")
    n = len(data) if limit is None else min(limit, len(data))
    batch_size = max(1, min(batch_size, EVAL_BATCH_CAP))
    per_video: dict[str, list[Tensor]] = {k: [] for k in ("fg_ari", "ari", "frame_fg_ari", "mbo", "mse")}
    with evaluation(model, seed) as device:
        for start in range(0, n, batch_size):
            batch = data.batch(slice(start, min(start + batch_size, n)))
            inputs = {k: v.to(device) for k, v in video_inputs(model, batch).items()}
            with autocast(precision, device):
                out = model(**inputs)
            masks, recon = out["masks"].cpu(), out["recon"].cpu()
            per_video["fg_ari"].append(metrics.video_fg_ari(batch["masks"], masks))
            per_video["ari"].append(metrics.video_ari(batch["masks"], masks))
            per_video["frame_fg_ari"].append(metrics.per_frame_fg_ari(batch["masks"], masks))
            per_video["mbo"].append(metrics.video_mbo(batch["masks"], masks))
            per_video["mse"].append(metrics.mse(video_target(model, batch).flatten(1), recon.flatten(1)))
    return {"num_videos": n, **metrics.mean_and_sem(per_video)}


def format_video_metrics(result: dict[str, float]) -> str:
    """One line: video FG-ARI, video ARI, per-frame FG-ARI, video mBO (percent) and MSE."""
    return (f"video FG-ARI {100 * result['fg_ari']:.1f}  ARI {100 * result['ari']:.1f}  per-frame FG-ARI "
            f"{100 * result['frame_fg_ari']:.1f}  mBO {100 * result['mbo']:.1f}  MSE {result['mse']:.5f}  "
            f"({int(result['num_videos'])} videos)")
