"""Quality against wall-clock training minutes for the demo preset (FG-ARI, ARI, mBO on held-out scenes).

Trains ``--experiment`` (default: the demo's ``tetrominoes_cpu``) for ``--minutes`` of training time, evaluating
every ``--every`` minutes on the validation split (which picks the checkpoint) and, for the curve only, on the test
split. Prints a markdown table and, at each requested budget, the test metrics at the best validation point so far.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/demo_curve.py --minutes 30 --workdir runs/bench_demo

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
from slotlab.viz import save_curves  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tetrominoes_cpu")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--every", type=float, default=1.0, help="minutes between evaluations")
    p.add_argument("--budgets", default="10,30", help="report test metrics at these minute marks")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench_demo"))
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
    print("| train min | step | val FG-ARI | val ARI | val mBO | test FG-ARI | test ARI | test mBO | val MSE |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in val:
        t = test.get(r["step"], {})
        print(f"| {r['train_seconds'] / 60:.1f} | {r['step']} | {100 * r['fg_ari']:.1f} | {100 * r['ari']:.1f} | "
              f"{100 * r['mbo']:.1f} | {100 * t.get('fg_ari', float('nan')):.1f} | "
              f"{100 * t.get('ari', float('nan')):.1f} | {100 * t.get('mbo', float('nan')):.1f} | {r['mse']:.5f} |")
    print()
    for budget in [float(b) for b in args.budgets.split(",") if b]:
        seen = [r for r in val if r["train_seconds"] <= budget * 60 + 1]
        if not seen:
            continue
        best = max(seen, key=lambda r: r["fg_ari"])
        t = test.get(best["step"], {})
        print(f"within {budget:g} min: best validation point step {best['step']} "
              f"({best['train_seconds'] / 60:.1f} min) -> test FG-ARI {100 * t.get('fg_ari', float('nan')):.1f}, "
              f"ARI {100 * t.get('ari', float('nan')):.1f}, mBO {100 * t.get('mbo', float('nan')):.1f}")
    save_curves(args.workdir, args.workdir / "curves.png")
    print(f"\ncurves: {args.workdir / 'curves.png'}")


if __name__ == "__main__":
    main()
