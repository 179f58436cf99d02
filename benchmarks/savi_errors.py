"""Where a video model's foreground pixels go: to the slot that holds their object over the whole video (the slot
that takes most of the object's pixels in all frames), to the background's slot (slot 0 of a conditional model), or
to other slots; how much of the background object slots take; and how the foreground's errors split between
the objects' edges (pixels with a differently labelled pixel among their 8 neighbours) and their insides.
``--shapes`` also prints whether the masks and the slots know the sprites' shapes: the video FG-ARI of the masks,
of the corrector's attention alone (log attention upsampled from the feature grid, argmax) and of their sum of logs;
per shape class (box fill ratio of an object's first-frame pixels: squares ~1, ellipses ~0.8, triangles ~0.55),
how much of its box the object's slot fills; and a linear probe of the class from the slots (half the objects
train it, half test it).

    python benchmarks/savi_errors.py RUN_DIR [--checkpoint best|last] [--videos 48] [--shapes]

Reads the run's validation videos (its own data config); prints lines of fractions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F_nn

from slotlab import metrics
from slotlab.data.video import build_video_splits
from slotlab.evaluate_video import video_inputs
from slotlab.runs import load_model


def edges(true: torch.Tensor) -> torch.Tensor:
    """(F, H, W) ids -> (F, H, W) bool: pixels with a differently labelled pixel among their 8 neighbours."""
    ids = true[:, None].float()  # (F, 1, H, W)
    high = F_nn.max_pool2d(ids, 3, 1, 1)
    low = -F_nn.max_pool2d(-ids, 3, 1, 1)
    return ((high != ids) | (low != ids))[:, 0]


def pixel_fates(pred: torch.Tensor, true: torch.Tensor, num_slots: int) -> dict[str, int]:
    """pred, true (F, H, W) slot / object ids of one video -> pixel counts: foreground to its object's slot
    (``own``), to slot 0 (``background_slot``), to another slot (``other``); background to slots > 0; foreground
    pixels on an edge (``edge``) and those of them that went to their object's slot (``edge_own``)."""
    counts = {"own": 0, "background_slot": 0, "other": 0, "background_to_objects": 0, "background": 0,
              "edge": 0, "edge_own": 0}
    on_edge = edges(true)
    for obj in true.unique().tolist():
        got = torch.bincount(pred[true == obj], minlength=num_slots)  # (K,)
        if obj == 0:
            counts["background"] += int(got.sum())
            counts["background_to_objects"] += int(got[1:].sum())
            continue
        own = int(got[1:].argmax()) + 1
        counts["own"] += int(got[own])
        counts["background_slot"] += int(got[0])
        counts["other"] += int(got.sum() - got[own] - got[0])
        rim = (true == obj) & on_edge
        counts["edge"] += int(rim.sum())
        counts["edge_own"] += int((pred[rim] == own).sum())
    return counts


def fill_ratio(mask: torch.Tensor) -> float:
    """(H, W) bool -> the fraction of its bounding box the mask covers (0 for an empty mask)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        return 0.0
    return len(ys) / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))


def shape_report(model, val, videos: int, frame: int = 5) -> None:
    """Print the masks' / attention's video FG-ARI, the drawn fill ratio per shape class and a shape probe."""
    scores: dict[str, list[torch.Tensor]] = {"masks": [], "attention": [], "masks + attention": []}
    slots, classes, drawn = [], [], []
    with torch.no_grad():
        for start in range(0, min(videos, len(val)), 8):
            batch = val.batch(slice(start, min(start + 8, videos, len(val))))
            out = model(**video_inputs(model, batch))
            B, F, K = out["masks"].shape[:3]
            log_attn = model.attention_prior(out["attn"])[:, :, 0].unflatten(0, (B, F))  # (B, F, K, H, W)
            masks = out["masks"][:, :, :, 0]
            for name, pred in (("masks", masks), ("attention", log_attn),
                               ("masks + attention", masks.clamp(min=1e-6).log() + log_attn)):
                scores[name].append(metrics.video_fg_ari(batch["masks"], pred))
            first = batch["masks"][:, 0]  # (B, G, H, W): the first frame's objects
            hard = masks[:, 0].argmax(1)  # (B, H, W)
            for i in range(B):
                for g in range(1, first.shape[1]):
                    if (first[i, g] > 0).sum() < 40:  # absent or mostly hidden
                        continue
                    ratio = fill_ratio(first[i, g] > 0)
                    classes.append(0 if ratio > 0.93 else 1 if ratio > 0.68 else 2)
                    drawn.append(fill_ratio(hard[i] == g))
                    slots.append(out["slots"][i, min(frame, F - 1), g])
    print("video FG-ARI: " + ", ".join(f"{k} {100 * torch.cat(v).mean():.1f}" for k, v in scores.items()))
    y, fills = torch.tensor(classes), torch.tensor(drawn)
    print("drawn box fill ratio by true class (square ~1 / ellipse ~0.8 / triangle ~0.55): " + ", ".join(
        f"{name} {fills[y == c].mean():.2f}" for c, name in enumerate(("squares", "ellipses", "triangles"))))
    x = torch.stack(slots)
    half = len(y) // 2
    x = (x - x[:half].mean(0)) / (x[:half].std(0) + 1e-6)
    weight = torch.zeros(x.shape[1], 3, requires_grad=True)
    bias = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(500):
        optimizer.zero_grad()
        loss = F_nn.cross_entropy(x[:half] @ weight + bias, y[:half]) + 1e-3 * weight.square().sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = ((x[half:] @ weight + bias).argmax(1) == y[half:]).float().mean()
    print(f"shape probe on the slots at frame {frame}: {100 * accuracy:.1f} % right on {len(y) - half} held-out "
          f"objects (always the commonest class: {100 * torch.bincount(y[half:]).max() / (len(y) - half):.1f} %)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a video run directory")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--shapes", action="store_true", help="also the shape report (see the module docstring)")
    args = p.parse_args()
    model, cfg = load_model(Path(args.run), args.checkpoint)
    if cfg.model.conditioning == "learned":
        raise SystemExit("savi_errors: slot 0 is the background's slot only in a conditional model")
    val = build_video_splits(cfg.data)["val"]
    total: dict[str, int] = {}
    with torch.no_grad():
        for start in range(0, min(args.videos, len(val)), 8):
            batch = val.batch(slice(start, min(start + 8, args.videos, len(val))))
            pred = model(**video_inputs(model, batch))["masks"][:, :, :, 0].argmax(2)  # (B, F, H, W)
            for p_i, t_i in zip(pred, batch["masks"].argmax(2), strict=True):
                for key, n in pixel_fates(p_i, t_i, cfg.model.num_slots).items():
                    total[key] = total.get(key, 0) + n
    fg = total["own"] + total["background_slot"] + total["other"]
    print(f"foreground: {100 * total['own'] / fg:.1f} % to its object's slot, "
          f"{100 * total['background_slot'] / fg:.1f} % to the background's slot, {100 * total['other'] / fg:.1f} % "
          f"to other slots; background: {100 * total['background_to_objects'] / total['background']:.1f} % to "
          f"object slots ({fg + total['background']} pixels, {min(args.videos, len(val))} videos)")
    inside, inside_own = fg - total["edge"], total["own"] - total["edge_own"]
    print(f"edges: {100 * total['edge'] / fg:.1f} % of the foreground, {100 * total['edge_own'] / total['edge']:.1f} "
          f"% to their object's slot (inside: {100 * inside_own / max(inside, 1):.1f} %); "
          f"{100 * (total['edge'] - total['edge_own']) / max(fg - total['own'], 1):.1f} % of the foreground's "
          "errors are on edges")
    if args.shapes:
        torch.manual_seed(0)
        shape_report(model, val, args.videos)


if __name__ == "__main__":
    main()
