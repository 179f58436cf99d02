"""Shared by the curve benchmarks (demo_curve.py, set_curve.py): parse the common flags, train a preset for a
wall-clock budget with periodic validation (and test rows for the curve only), return the logged rows."""

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


def parse_args(doc: str, experiment: str, every: float, budgets: str, workdir: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default=experiment)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--every", type=float, default=every, help="minutes between evaluations")
    p.add_argument("--budgets", default=budgets, help="report test metrics at these minute marks")
    p.add_argument("--workdir", type=Path, default=Path(workdir))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    return p.parse_args()


def run(args: argparse.Namespace) -> tuple[list[dict], dict[int, dict]]:
    """Train ``args.experiment`` for ``args.minutes``; print the machine line; return (val rows, test rows by step)."""
    cfg = get_experiment(args.experiment)
    apply_overrides(cfg, [f"train.max_minutes={args.minutes}", f"train.eval_every_minutes={args.every}",
                          "train.report_test=true", *args.overrides])
    if not any(o.startswith("train.steps") for o in args.overrides):
        cfg.train.steps = 10**9  # the time budget ends the run
    t0 = time.time()
    train(cfg, args.workdir, progress=False)
    wall = time.time() - t0
    rows = [json.loads(line) for line in (args.workdir / "metrics.jsonl").read_text().splitlines()]
    print(f"\n{args.experiment} on {platform.machine()} {os.cpu_count()} cores, torch threads "
          f"{cfg.train.num_threads or os.cpu_count()}; total wall {wall / 60:.1f} min (training + evaluation)\n")
    return [r for r in rows if r["kind"] == "val"], {r["step"]: r for r in rows if r["kind"] == "test"}


def best_within(val: list[dict], budget_minutes: float, key: str) -> dict | None:
    """The validation row with the highest ``key`` among those logged within the budget (None if none)."""
    seen = [r for r in val if r["train_seconds"] <= budget_minutes * 60 + 1]
    return max(seen, key=lambda r: r[key]) if seen else None
