"""What each exact fast path adds to a training step: the plain formulation, then the switches turned on one by one.

    python benchmarks/ablation_train.py --presets tetrominoes multi_dsprites --batch 16 --threads 1 --rounds 3

Interleaved rounds (slotlab.bench.module.time_rounds); a markdown table of median ms/step and the median per-round
speed-up over the plain formulation. The switches are those of slotlab.nn.fast_paths.FAST_SWITCHES.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import torch  # noqa: E402

from slotlab.bench.module import time_rounds  # noqa: E402
from slotlab.bench.train_step import synthetic_step  # noqa: E402
from slotlab.experiments import get_experiment  # noqa: E402

# cumulative: each row turns on one more switch (attribute name -> the label of the row)
STAGES = [("fast", "+ fast Slot Attention"), ("fast_stem", "+ fast decoder stem"),
          ("channels_last", "+ channels-last convs, in-place ReLUs"), ("fused_recompose", "+ fused recomposition")]


def stage_step(preset: str, batch: int, on: set[str]):
    cfg = get_experiment(preset)
    step = synthetic_step(cfg, batch, fast=False, precision="fp32")
    for module in step.model.modules():
        for name in on:
            if isinstance(getattr(module, name, None), bool):
                setattr(module, name, True)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tetrominoes", "multi_dsprites"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.threads} thread(s), fp32, median of {args.rounds} interleaved rounds\n")
    print("| preset | fast paths on | ms/step | x faster than plain (median of rounds) |")
    print("|---|---|---:|---:|")
    for preset in args.presets:
        labels = ["plain formulation"] + [label for _, label in STAGES]
        steps = {labels[i]: stage_step(preset, args.batch, {name for name, _ in STAGES[:i]})
                 for i in range(len(labels))}
        times = time_rounds(steps, args.rounds)
        plain = times[labels[0]]["wall"]
        for label in labels:
            wall = times[label]["wall"]
            speedup = statistics.median(p / w for p, w in zip(plain, wall, strict=True))
            print(f"| {preset} | {label} | {1e3 * statistics.median(wall):.0f} | {speedup:.2f} |", flush=True)


if __name__ == "__main__":
    main()
