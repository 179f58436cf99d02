"""``slotlab segment`` on PNG files against ``slotlab eval`` on the same scenes in their original format.

Writes the scenes of ``--data`` (e.g. DeepMind's Tetrominoes TFRecord) as ``DIR/scene_000.png`` ..., runs
``slotlab segment --model NAME DIR --out OUT``, scores the label maps it wrote against the true masks (FG-ARI,
ARI, mBO) and prints them beside ``slotlab eval --model NAME --data SPEC`` on the original file.

    python benchmarks/segment_check.py --model tetrominoes \
        --data tetrominoes:../shared/data/real/tetrominoes_mini.tfrecords
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from slotlab import metrics
from slotlab.data.specs import load_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    scenes = load_scenes(args.data, limit=args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        images, out = Path(tmp) / "scenes", Path(tmp) / "segmented"
        images.mkdir()
        for i, image in enumerate(scenes.images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(images / f"scene_{i:03d}.png")
        cli = [sys.executable, "-m", "slotlab"]
        subprocess.run([*cli, "segment", "--model", args.model, str(images), "--out", str(out), "--no-progress"],
                       check=True)
        labels = torch.stack([torch.from_numpy(np.array(Image.open(out / f"scene_{i:03d}.png")))
                              for i in range(len(scenes))]).long()  # (B, H, W)
        pred = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).permute(0, 3, 1, 2).float()
        true = scenes.batch(slice(None))["masks"]
        seg = {"fg_ari": metrics.fg_ari(true, pred).mean().item(), "ari": metrics.ari(true, pred).mean().item(),
               "mbo": metrics.mbo(true, pred).mean().item()}
        eval_json = Path(tmp) / "eval.json"
        subprocess.run([*cli, "eval", "--model", args.model, "--data", args.data, "--json", str(eval_json)]
                       + (["--limit", str(args.limit)] if args.limit else []), check=True, stdout=subprocess.DEVNULL)
        ev = json.loads(eval_json.read_text())
    print(f"{args.model} on {args.data} ({len(scenes)} scenes)\n")
    print("| | FG-ARI | ARI | mBO |\n|---|---:|---:|---:|")
    for label, r in [("segment (PNG files, label maps)", seg), ("eval (original format)", ev)]:
        print(f"| {label} | {100 * r['fg_ari']:.2f} | {100 * r['ari']:.2f} | {100 * r['mbo']:.2f} |")


if __name__ == "__main__":
    main()
