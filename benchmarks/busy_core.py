"""Does the demo keep its speed when another process keeps one core busy? Prints a markdown table.

For each OpenMP wait policy (PASSIVE, which ``import slotlab`` sets, and ACTIVE, OpenMP's spinning), each thread
setting (the training loop's default, ``train.num_threads=0``, and 1) and each load (alone; with a busy loop
``python -c "while True: pass"``, not pinned, so the scheduler places it), a fresh process trains the preset
(``tetrominoes_cpu``, the demo's) on random images for a few seconds and reports steps/s:

    python benchmarks/busy_core.py [--preset tetrominoes_cpu] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def run_cell(preset: str, threads: int, seconds: float, policy: str) -> dict:
    code = ("import sys, json; from slotlab.bench.train_step import steps_per_second; "
            "print(json.dumps(steps_per_second(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))")
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-c", code, preset, str(threads), str(seconds)], env=env,
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tetrominoes_cpu")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="0 = the training loop's default")
    p.add_argument("--policies", nargs="+", default=["PASSIVE", "ACTIVE"])
    args = p.parse_args()
    print(f"{args.preset}, {args.seconds:g} s per cell, steps/s (CPU s per step)\n")
    print("| OMP_WAIT_POLICY | threads | alone: steps/s | with a busy core: steps/s | busy / alone |")
    print("|---|---:|---:|---:|---:|")
    for policy in args.policies:
        for threads in args.threads:
            alone = run_cell(args.preset, threads, args.seconds, policy)
            busy_loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                busy = run_cell(args.preset, threads, args.seconds, policy)
            finally:
                busy_loop.kill()
                busy_loop.wait()
            label = f"{alone['threads']}" + (" (default)" if threads == 0 else "")
            print(f"| {policy} | {label} | {alone['steps_per_s']:.1f} ({alone['cpu_s_per_step']:.3f}) "
                  f"| {busy['steps_per_s']:.1f} ({busy['cpu_s_per_step']:.3f}) "
                  f"| {busy['steps_per_s'] / alone['steps_per_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
