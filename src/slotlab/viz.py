"""Pictures of an object-discovery model: what it sees, reconstructs, and how its slots divide the scene.

- :func:`save_scene_figure`: per scene, the input, the reconstruction, each slot's reconstruction x mask, and the
  argmax segmentation beside the ground truth.
- :func:`save_attention_figure`: one scene's attention of every slot at every Slot Attention iteration.
- :func:`save_curves`: validation FG-ARI, ARI and mBO (and the training loss) against training minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from slotlab.data import SceneSet  # noqa: E402

PALETTE = torch.tensor([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
], dtype=torch.float32) / 255.0


def _rgb(image: Tensor) -> Tensor:
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    return ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0)


def _segmentation(masks: Tensor) -> Tensor:
    """(K, H, W) soft or one-hot masks -> (H, W, 3) colour-coded argmax."""
    return PALETTE[masks.argmax(0) % len(PALETTE)]


@torch.no_grad()
def _run(model: nn.Module, images: Tensor, seed: int) -> dict[str, Tensor]:
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model(images)


def save_scene_figure(model: nn.Module, scenes: SceneSet, out: Path, num_scenes: int = 6, seed: int = 0) -> None:
    """Rows = scenes; columns = input, reconstruction, slot 1..K (recon x mask), predicted and true segmentation."""
    n = min(num_scenes, len(scenes))
    batch = scenes.batch(slice(0, n))
    out_ = _run(model, batch["image"], seed)
    K = out_["masks"].shape[1]
    cols = K + 4
    fig, axes = plt.subplots(n, cols, figsize=(1.4 * cols, 1.4 * n + 0.3), squeeze=False)
    for i in range(n):
        panels = [("input", _rgb(batch["image"][i])), ("recon", _rgb(out_["recon"][i]))]
        for k in range(K):
            # slot k's contribution on white: recon_k * mask_k + (1 - mask_k)
            mask = out_["masks"][i, k]  # (1, H, W)
            shown = _rgb(out_["recons"][i, k]) * mask.permute(1, 2, 0) + (1 - mask.permute(1, 2, 0))
            panels.append((f"slot {k + 1}", shown))
        panels.append(("predicted", _segmentation(out_["masks"][i, :, 0])))
        panels.append(("true", _segmentation(batch["masks"][i])))
        for j, (title, img) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img.numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def save_attention_figure(model: nn.Module, scenes: SceneSet, out: Path, index: int = 0, seed: int = 0) -> None:
    """Rows = Slot Attention iterations; columns = the input, then each slot's attention over the inputs."""
    batch = scenes.batch(slice(index, index + 1), with_masks=False)
    result = _run(model, batch["image"], seed)
    attns = result["attns"][0]  # (T, K, N)
    T, K, N = attns.shape
    side = int(round(N**0.5))
    fig, axes = plt.subplots(T, K + 1, figsize=(1.5 * (K + 1), 1.5 * T + 0.3), squeeze=False)
    for t in range(T):
        axes[t, 0].imshow(_rgb(batch["image"][0]).numpy(), interpolation="nearest")
        axes[t, 0].set_ylabel(f"iter {t + 1}", fontsize=8)
        for k in range(K):
            axes[t, k + 1].imshow(attns[t, k].reshape(side, -1).numpy(), vmin=0, vmax=1, cmap="viridis",
                                  interpolation="nearest")
            if t == 0:
                axes[t, k + 1].set_title(f"slot {k + 1}", fontsize=8)
        for ax in axes[t]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("attention (softmax over slots) at each iteration", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def read_metrics(workdir: Path) -> tuple[list[dict], list[dict]]:
    """(train rows, val rows) of ``metrics.jsonl``."""
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines() if line]
    return [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "val"]


def save_curves(workdir: Path, out: Path) -> None:
    """Validation FG-ARI / ARI / mBO and the training loss against training wall-clock minutes."""
    train_rows, val_rows = read_metrics(workdir)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    minutes = [r["train_seconds"] / 60 for r in val_rows]
    for key, label in [("fg_ari", "FG-ARI"), ("ari", "ARI"), ("mbo", "mBO")]:
        ax1.plot(minutes, [r[key] for r in val_rows], marker="o", ms=3, label=label)
    ax1.set_xlabel("training minutes")
    ax1.set_ylim(-0.05, 1.0)
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax1.set_title("validation")
    ax2.plot([r["train_seconds"] / 60 for r in train_rows], [r["loss"] for r in train_rows])
    ax2.set_yscale("log")
    ax2.set_xlabel("training minutes")
    ax2.set_title("training MSE")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
