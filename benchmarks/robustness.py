"""Test-time robustness of a trained model: its task's metrics (FG-ARI / ARI / mBO for object discovery, AP for
set prediction) at T = 3, 5, 7 iterations and at K + 2 slots, on the same scenes.

    python benchmarks/robustness.py RUN_DIR [--data test] [--checkpoint best] [--json out.json]

A model whose slot updates settle (a fixed point) keeps its scores as T grows; one that learned a fixed
T-step trajectory does not. Prints a markdown table (percentages) with the CPU named.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from slotlab.bench import cpu_name
from slotlab.runs import eval_run, load_model
from slotlab.tasks import get_task


def robustness(workdir: Path, data: str, checkpoint: str, limit: int | None) -> list[dict]:
    """One row per setting: T = 3, 5, 7 at the trained K, then K + 2 slots at the trained T."""
    _, cfg = load_model(workdir, checkpoint)
    k, t = cfg.model.num_slots, cfg.model.test_iters or cfg.model.num_iters
    settings = [(f"T={n}", None, n) for n in (3, 5, 7)] + [(f"K+2={k + 2}, T={t}", k + 2, None)]
    rows = []
    for label, num_slots, num_iters in settings:
        result = eval_run(workdir, data, checkpoint, num_slots=num_slots, num_iters=num_iters, limit=limit)
        rows.append({"setting": label, **{m: result[m] for m in get_task(cfg).curves}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--data", default="test")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = robustness(args.workdir, args.data, args.checkpoint, args.limit)
    labels = get_task(load_model(args.workdir, args.checkpoint)[1]).curves
    print(f"{args.workdir} ({args.checkpoint}) on {args.data}; CPU: {cpu_name()}\n")
    print(f"| setting | {' | '.join(labels.values())} |\n|---|" + "---:|" * len(labels))
    for r in rows:
        print(f"| {r['setting']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in labels) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
