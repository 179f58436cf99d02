"""Pictures of a video model: each slot keeps one colour in every frame, so a slot that tracks its object shows as
one colour following it, and a swap shows as a colour change.

- :func:`save_video_figure`: per video, rows of frames: input, reconstruction, per-slot segmentation, ground truth;
- :func:`save_video_animation`: an animated GIF of input | reconstruction | segmentation | ground truth.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from slotlab.evaluate_video import video_inputs  # noqa: E402
from slotlab.viz import PALETTE, _rgb, _segmentation  # noqa: E402


@torch.no_grad()
def run_video_model(model: nn.Module, batch: dict[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """The model's outputs on ``batch`` in eval mode, the initial-slot draw fixed by ``seed``."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return model(**video_inputs(model, batch))
    finally:
        model.train(was_training)


def _frame_panels(batch: dict[str, Tensor], out: dict[str, Tensor], i: int, t: int) -> list[tuple[str, Tensor]]:
    """The four (H, W, 3) pictures of video i, frame t: input, reconstruction, slots, ground truth."""
    return [("input", _rgb(batch["video"][i, t])), ("recon", _rgb(out["recon"][i, t])),
            ("slots", _segmentation(out["masks"][i, t, :, 0])), ("true", _segmentation(batch["masks"][i, t]))]


def save_video_figure(model: nn.Module, videos, out: Path, num_videos: int = 2, max_frames: int = 12,
                      seed: int = 0) -> None:
    """Rows: for each video, input / reconstruction / slots / ground truth; columns: frames (at most
    ``max_frames``, evenly spaced). Slot k is drawn in colour k of the palette in every frame."""
    n = min(num_videos, len(videos))
    batch = videos.batch(slice(0, n))
    result = run_video_model(model, batch, seed)
    F = batch["video"].shape[1]
    frames = np.unique(np.linspace(0, F - 1, min(F, max_frames)).round().astype(int))
    fig, axes = plt.subplots(4 * n, len(frames), figsize=(1.1 * len(frames), 4.6 * n), squeeze=False)
    for i in range(n):
        for j, t in enumerate(frames):
            for r, (title, img) in enumerate(_frame_panels(batch, result, i, int(t))):
                ax = axes[4 * i + r, j]
                ax.imshow(img.numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(title, fontsize=8)
                if r == 0 and i == 0:
                    ax.set_title(f"t={t}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def save_video_animation(model: nn.Module, videos, out: Path, index: int = 0, seed: int = 0, scale: int = 3,
                         frame_ms: int = 200) -> None:
    """An animated GIF of video ``index``: input | reconstruction | slots | ground truth, side by side, each
    enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    batch = videos.batch(slice(index, index + 1))
    result = run_video_model(model, batch, seed)
    pictures = []
    for t in range(batch["video"].shape[1]):
        panels = [img for _, img in _frame_panels(batch, result, 0, t)]
        gap = torch.ones(panels[0].shape[0], 2, 3)
        row = torch.cat([p for img in panels for p in (img, gap)][:-1], dim=1)  # (H, 4W + 6, 3)
        array = (row.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        pictures.append(Image.fromarray(array.repeat(scale, 0).repeat(scale, 1)))
    pictures[0].save(out, save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)


__all__ = ["PALETTE", "run_video_model", "save_video_animation", "save_video_figure"]
