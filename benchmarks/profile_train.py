"""Where a training step's time goes: torch.profiler's operator table for one preset (slotlab or plain path).

    python benchmarks/profile_train.py --preset tetrominoes --batch 16 --threads 1 [--plain] [--steps 3]

Prints the operators by self CPU time (forward and backward ops alike), after one warm-up step.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from slotlab.bench.train_step import synthetic_step  # noqa: E402
from slotlab.experiments import get_experiment  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tetrominoes")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--plain", action="store_true", help="profile the plain formulation instead of slotlab's")
    p.add_argument("--rows", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    step = synthetic_step(get_experiment(args.preset), args.batch, fast=not args.plain, precision="fp32")
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(f"{args.preset}, batch {args.batch}, {args.threads} thread(s), {'plain' if args.plain else 'slotlab'}, "
          f"{args.steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
