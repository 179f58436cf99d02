"""Training-step time of config variants of one preset, side by side (steps per minute is what a time budget buys).

    python benchmarks/bench_variants.py --experiment tetrominoes_bg_cpu --threads 2 \
        base "b8 train.batch_size=8" "dk3 model.decoder_kernel=3 model.decoder_layers=2"

Each variant is ``LABEL [key=value ...]`` (``--set`` overrides of the preset). Each gets its own model and Adam
from the same seed and one random batch of its batch size; a step is :func:`slotlab.bench.train_step.make_train_step`
(forward under the preset's precision, loss, backward, Adam). Interleaved rounds
(:func:`slotlab.bench.module.time_rounds`); prints a markdown table of the median ms/step, steps/min and
images/s. Wall-clock on a shared machine: compare rows of one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import torch  # noqa: E402

from slotlab.bench.module import time_rounds  # noqa: E402
from slotlab.bench.train_step import synthetic_step  # noqa: E402
from slotlab.config import apply_overrides  # noqa: E402
from slotlab.experiments import get_experiment  # noqa: E402


def make_step(experiment: str, overrides: list[str], steps_per_call: int):
    cfg = apply_overrides(get_experiment(experiment), overrides)
    one = synthetic_step(cfg, cfg.train.batch_size, lr=1e-4)

    def step() -> None:
        for _ in range(steps_per_call):
            one()

    return step, cfg.train.batch_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help='"LABEL [key=value ...]"')
    ap.add_argument("--experiment", default="tetrominoes_bg_cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="training steps per timed call")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps, batch = {}, {}
    for spec in args.variants:
        label, *overrides = spec.split()
        steps[label], batch[label] = make_step(args.experiment, overrides, args.steps)
    times = time_rounds(steps, args.rounds)
    print(f"{args.experiment}, {args.threads} threads, median of {args.rounds} rounds of {args.steps} steps\n")
    print("| variant | ms/step | steps/min | images/s |")
    print("|---|---:|---:|---:|")
    for label in steps:
        sec = statistics.median(times[label]["wall"]) / args.steps
        print(f"| {label} | {1000 * sec:.1f} | {60 / sec:.0f} | {batch[label] / sec:.0f} |")


if __name__ == "__main__":
    main()
