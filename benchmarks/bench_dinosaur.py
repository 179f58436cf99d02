"""Training steps/s of a DINOSAUR preset (default ``dinosaur_coco``: ViT-B/16, 224x224, K=7, decoder 3 x 2048) at
the paper's batch size (64), with the feature cache (features read from a memory-mapped fp16 file) and without it
(the frozen ViT runs on every batch). The backbone is random (the speed does not depend on the weights) and the
images synthetic (no COCO on this machine); a step = reading the batch + forward + backward + Adam.

    OMP_NUM_THREADS=1 python benchmarks/bench_dinosaur.py --steps 3 --threads 1
    python benchmarks/bench_dinosaur.py --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from slotlab.data.features import FeatureSplit, feature_split
from slotlab.distributed import resolve_device
from slotlab.experiments import get_experiment
from slotlab.nn.backbone import FrozenBackbone
from slotlab.tasks import TASKS, build_model
from slotlab.train import batch_indices, to_device, train_step


class SyntheticImages:
    """``num`` random uint8 images held in memory, as a feature source (no targets: training only)."""

    def __init__(self, num: int, resolution: int) -> None:
        self.data = torch.randint(0, 256, (num, 3, resolution, resolution), dtype=torch.uint8,
                                  generator=torch.Generator().manual_seed(0))
        self.resolution, self.name, self.key = resolution, "synthetic", f"synthetic:{num}:{resolution}"

    def __len__(self) -> int:
        return len(self.data)

    def images(self, index) -> torch.Tensor:
        return self.data[index]


def time_steps(model, split, batch: int, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per training step (batch read + step), after ``warmup`` untimed steps."""
    task = TASKS["features"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        data = to_device(task.batch(split, batch_indices(step, 0, batch, len(split))), device)
        loss = train_step(model, optimizer, task, data, "fp32", 1.0)
        loss.item()  # waits for the device
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="dinosaur_coco")
    p.add_argument("--batch", type=int, default=64, help="batch size (the paper's: 64)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device, "--device")
    cfg = get_experiment(args.preset)
    m = cfg.model
    backbone = FrozenBackbone(m.backbone, "random", m.resolution, m.backbone_block).to(device)
    source = SyntheticImages(args.batch, m.resolution)  # every step draws its batch from these
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cached = feature_split(source, backbone, "fp16", Path(tmp), progress=False)
        build = time.perf_counter() - t0
        for mode, split in (("feature cache (fp16 memmap)", cached), ("on the fly (ViT every step)",
                                                                     FeatureSplit(source, backbone))):
            torch.manual_seed(0)
            model = build_model(m).to(device)
            rows.append((mode, time_steps(model, split, args.batch, args.warmup, args.steps, device)))
    print(f"{args.preset}: {m.backbone} at {m.resolution}px, K={m.num_slots}, batch {args.batch}, {device}, "
          f"{args.threads} thread(s), {args.steps} timed steps after {args.warmup} warm-up")
    print(f"(building the cache of {len(source)} images took {build:.1f} s)\n")
    print("| features | s/step | steps/s | images/s |")
    print("|---|---:|---:|---:|")
    for mode, sec in rows:
        print(f"| {mode} | {sec:.2f} | {1 / sec:.3f} | {args.batch / sec:.1f} |")
    print(f"\nspeed-up of the cache: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
