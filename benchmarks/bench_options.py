"""Options that change the mathematics, per training step: bf16 autocast, implicit gradient, torch.compile.

    python benchmarks/bench_options.py --presets tetrominoes tetrominoes_cpu --batch 16 --threads 1 --rounds 5

Each variant is its own model and Adam from the same seed, on the same random batch; one step is
:func:`slotlab.bench.train_step.make_train_step` (forward, the task's loss, backward, Adam). Interleaved rounds
(slotlab.bench.module.time_rounds); a markdown table of the median ms/step, images/s and the median per-round
speed-up over fp32. Compiled variants are compiled (and warmed up with one step) before timing; the compile seconds
are printed beside them. Presets of tasks the step benchmarks cover (object discovery).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import torch  # noqa: E402

from slotlab.bench.module import time_rounds  # noqa: E402
from slotlab.bench.train_step import synthetic_step  # noqa: E402
from slotlab.compilation import compile_model  # noqa: E402
from slotlab.experiments import get_experiment  # noqa: E402

# label -> (precision, implicit_grad, compile)
VARIANTS = {
    "fp32 (default)": ("fp32", False, False),
    "bf16 autocast": ("bf16", False, False),
    "implicit gradient": ("fp32", True, False),
    "compile": ("fp32", False, True),
    "bf16 + compile": ("bf16", False, True),
}


def option_step(preset: str, batch: int, precision: str, implicit: bool, compiled: bool):
    """One training step of ``preset`` with the options; returns (step, compile seconds or None)."""
    cfg = get_experiment(preset)
    cfg.model.implicit_grad = implicit
    step = synthetic_step(cfg, batch, precision=precision)  # the same weights and batch for every variant
    seconds = None
    if compiled:
        start = time.perf_counter()
        group = compile_model(step.model, step)
        seconds = time.perf_counter() - start
        if group.failed:
            raise RuntimeError("torch.compile fell back to eager; see the warning above")
    return step, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tetrominoes", "tetrominoes_cpu"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    variants = ["fp32 (default)"] + [v for v in args.variants if v != "fp32 (default)"]  # the baseline first
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.threads} thread(s), median of {args.rounds} interleaved rounds\n")
    print("| preset | option | ms/step | images/s | x faster than fp32 (median of rounds) | compile s |")
    print("|---|---|---:|---:|---:|---:|")
    for preset in args.presets:
        built = {label: option_step(preset, args.batch, *VARIANTS[label]) for label in variants}
        times = time_rounds({label: step for label, (step, _) in built.items()}, args.rounds)
        base = times[variants[0]]["wall"]
        for label in variants:
            wall = times[label]["wall"]
            speedup = statistics.median(b / w for b, w in zip(base, wall, strict=True))
            seconds = built[label][1]
            compile_s = "-" if seconds is None else f"{seconds:.0f}"
            print(f"| {preset} | {label} | {1e3 * statistics.median(wall):.0f} | "
                  f"{args.batch / statistics.median(wall):.0f} | {speedup:.2f} | {compile_s} |", flush=True)


if __name__ == "__main__":
    main()
