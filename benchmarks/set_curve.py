"""Set-prediction AP against wall-clock training minutes for the CPU preset (held-out built-in sprite scenes).

Trains ``--experiment`` (default ``sprites_set_cpu``) for ``--minutes`` of training time, evaluating every
``--every`` minutes on the validation split (which picks the checkpoint) and, for the curve only, on the test
split. Prints a markdown table of AP at the paper's five thresholds and, at each budget, the test AP at the best
validation point so far (selection by mean AP on validation).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/set_curve.py --minutes 30 --workdir runs/bench_set

Timing excludes evaluation; it is wall-clock time of the training steps on this machine (state the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from slotlab.config import apply_overrides  # noqa: E402
from slotlab.experiments import get_experiment  # noqa: E402
from slotlab.train import train  # noqa: E402

KEYS = ("ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125")


def _aps(row: dict) -> str:
    return " | ".join(f"{100 * row[k]:.1f}" if k in row else "-" for k in KEYS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="sprites_set_cpu")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--every", type=float, default=2.0, help="minutes between evaluations")
    p.add_argument("--budgets", default="10,20,30", help="report test AP at these minute marks")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench_set"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    cfg = get_experiment(args.experiment)
    apply_overrides(cfg, [f"train.max_minutes={args.minutes}", f"train.eval_every_minutes={args.every}",
                          "train.report_test=true", *args.overrides])
    if not any(o.startswith("train.steps") for o in args.overrides):
        cfg.train.steps = 10**9  # the time budget ends the run
    t0 = time.time()
    train(cfg, args.workdir, progress=False)
    wall = time.time() - t0

    rows = [json.loads(line) for line in (args.workdir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"]
    test = {r["step"]: r for r in rows if r["kind"] == "test"}
    print(f"\n{args.experiment} on {platform.machine()} {os.cpu_count()} cores, torch threads "
          f"{cfg.train.num_threads or os.cpu_count()}; total wall {wall / 60:.1f} min (training + evaluation)\n")
    print("| train min | step | val loss | val AP inf | 1 | 0.5 | 0.25 | 0.125 "
          "| test AP inf | 1 | 0.5 | 0.25 | 0.125 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in val:
        print(f"| {r['train_seconds'] / 60:.1f} | {r['step']} | {r['loss']:.4f} | {_aps(r)} | "
              f"{_aps(test.get(r['step'], {}))} |")
    print()
    for budget in [float(b) for b in args.budgets.split(",") if b]:
        seen = [r for r in val if r["train_seconds"] <= budget * 60 + 1]
        if seen:
            best = max(seen, key=lambda r: r["ap_mean"])
            t = test.get(best["step"], {})
            print(f"within {budget:g} min: best validation point step {best['step']} "
                  f"({best['train_seconds'] / 60:.1f} min) -> test AP inf/1/0.5/0.25/0.125 = {_aps(t)}")


if __name__ == "__main__":
    main()
