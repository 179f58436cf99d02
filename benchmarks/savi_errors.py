"""Where a video model's foreground pixels go: to the slot that holds their object over the whole video (the slot
that takes most of the object's pixels in all frames), to the background's slot (slot 0 of a conditional model), or
to other slots; and how much of the background object slots take.

    python benchmarks/savi_errors.py RUN_DIR [--checkpoint best|last] [--videos 48]

Reads the run's validation videos (its own data config); prints one line of fractions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from slotlab.data.video import build_video_splits
from slotlab.evaluate_video import video_inputs
from slotlab.runs import load_model


def pixel_fates(pred: torch.Tensor, true: torch.Tensor, num_slots: int) -> dict[str, int]:
    """pred, true (F, H, W) slot / object ids of one video -> pixel counts: foreground to its object's slot
    (``own``), to slot 0 (``background_slot``), to another slot (``other``); background to slots > 0."""
    counts = {"own": 0, "background_slot": 0, "other": 0, "background_to_objects": 0, "background": 0}
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
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a video run directory")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--videos", type=int, default=48)
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


if __name__ == "__main__":
    main()
