"""Pictures of a model: what it sees, reconstructs, and how its slots divide the scene (or which objects it names).

- :func:`save_scene_figure`: per scene, the input, the reconstruction, each slot's reconstruction x mask, and the
  argmax segmentation beside the ground truth.
- :func:`save_attention_figure`: one scene's attention of every slot at every Slot Attention iteration.
- :func:`save_curves`: validation metrics (the task's curves) and the training loss against training minutes.
- :func:`save_set_figure`: set prediction: true versus predicted objects, drawn on the image and listed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from slotlab.data import SceneSet  # noqa: E402
from slotlab.noise import seeded_forward  # noqa: E402

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
    """The model's outputs with each image's initial slots seeded as in evaluation (slotlab.noise)."""
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return seeded_forward(model, images, seed)


def save_scene_figure(model: nn.Module, scenes: SceneSet, out: Path, num_scenes: int = 6, seed: int = 0) -> None:
    """Rows = scenes; columns = input, reconstruction, slot 1..K (recon x mask), predicted and true segmentation."""
    n = min(num_scenes, len(scenes))
    batch = scenes.batch(slice(0, n))
    out_ = _run(model, batch["image"], seed)
    K = out_["masks"].shape[1]
    cols = K + 3 + ("masks" in batch)  # no "true" column for images without masks
    fig, axes = plt.subplots(n, cols, figsize=(1.4 * cols, 1.4 * n + 0.3), squeeze=False)
    for i in range(n):
        panels = [("input", _rgb(batch["image"][i])), ("recon", _rgb(out_["recon"][i]))]
        for k in range(K):
            # slot k's contribution on white: recon_k * mask_k + (1 - mask_k)
            mask = out_["masks"][i, k]  # (1, H, W)
            shown = _rgb(out_["recons"][i, k]) * mask.permute(1, 2, 0) + (1 - mask.permute(1, 2, 0))
            panels.append((f"slot {k + 1}", shown))
        panels.append(("predicted", _segmentation(out_["masks"][i, :, 0])))
        if "masks" in batch:
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
    from slotlab.rundir import RunDir

    rows = RunDir(workdir).read_metrics()
    return [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "val"]


def save_curves(workdir: Path, out: Path, curves: dict[str, str] | None = None) -> None:
    """Validation metrics ``curves`` ({key in metrics.jsonl: label}; default: the run's task's, e.g. FG-ARI / ARI /
    mBO) and the training loss against training wall-clock minutes."""
    if curves is None:
        from slotlab.config import ExperimentConfig
        from slotlab.tasks import get_task

        curves = get_task(ExperimentConfig.load(Path(workdir) / "config.json")).curves
    train_rows, val_rows = read_metrics(workdir)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    minutes = [r["train_seconds"] / 60 for r in val_rows]
    for key, label in curves.items():
        ax1.plot(minutes, [r[key] for r in val_rows], marker="o", ms=3, label=label)
    ax1.set_xlabel("training minutes")
    ax1.set_ylim(-0.05, 1.0)
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax1.set_title("validation")
    ax2.plot([r["train_seconds"] / 60 for r in train_rows], [r["loss"] for r in train_rows])
    ax2.set_yscale("log")
    ax2.set_xlabel("training minutes")
    ax2.set_title("training loss")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def describe_object(row: Tensor, layout) -> str:
    """One target or prediction row -> e.g. "large red heart (0.31, 0.72)" (classes by argmax)."""
    a, b = layout.coords
    names = [block_names[int(row[s:e].argmax())] for _, s, e, block_names in layout.blocks]
    coords = ", ".join(f"{float(v):.2f}" for v in row[a:b])
    return f"{' '.join(names)} ({coords})"


def save_set_figure(model: nn.Module, scenes, out: Path, num_scenes: int = 6, seed: int = 0,
                    min_confidence: float = 0.5) -> None:
    """Rows = scenes: the image with true (circles) and predicted (crosses) object centres when the layout's
    coordinates are image positions, and beside it each true object next to the prediction matched to it
    (Hungarian, as in the loss); predictions with confidence below ``min_confidence`` are listed as "none"."""
    from slotlab.losses import pad_targets, pairwise_huber
    from slotlab.matching import hungarian_match
    from slotlab.set_layout import get_layout

    layout = get_layout(scenes.layout)
    n = min(num_scenes, len(scenes))
    batch = scenes.batch(slice(0, n))
    pred = _run(model, batch["image"], seed)["pred"]  # (n, K, P)
    target = pad_targets(batch["target"], pred.shape[1])  # (n, K, P)
    match = hungarian_match(pairwise_huber(pred, target))  # (n, K): slot of each target row
    fig, axes = plt.subplots(n, 2, figsize=(9, 2.2 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 3]})
    for i in range(n):
        image = _rgb(batch["image"][i])
        H, W = image.shape[:2]
        ax = axes[i, 0]
        ax.imshow(image.numpy())
        ax.set_axis_off()
        lines = []
        for row in range(target.shape[1]):
            t, p = target[i, row], pred[i, match[i, row]]
            real, confident = bool(t[layout.flag] > 0.5), bool(p[layout.flag] >= min_confidence)
            if not (real or confident):
                continue
            true_text = describe_object(t, layout) if real else "(no object)"
            pred_text = f"{describe_object(p, layout)} conf {float(p[layout.flag]):.2f}" if confident else "none"
            lines.append(f"{true_text:38s} -> {pred_text}")
            if layout.image_coords and real:
                ax.scatter([float(t[0]) * W - 0.5], [float(t[1]) * H - 0.5], s=90, facecolors="none",
                           edgecolors="white", linewidths=1.2)
            if layout.image_coords and confident:
                ax.scatter([float(p[0]) * W - 0.5], [float(p[1]) * H - 0.5], s=40, marker="x", c="black",
                           linewidths=1.2)
        axes[i, 1].set_axis_off()
        axes[i, 1].text(0, 1, "true -> predicted\n" + "\n".join(lines), va="top", family="monospace", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
