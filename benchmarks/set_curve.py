"""Set-prediction AP against wall-clock training minutes for the CPU preset (held-out built-in sprite scenes).

Trains ``--experiment`` (default ``sprites_set_cpu``) for ``--minutes`` of training time, evaluating every
``--every`` minutes on the validation split (which picks the checkpoint) and, for the curve only, on the test
split. Prints a markdown table of AP at the paper's five thresholds and, at each budget, the test AP at the best
validation point so far (selection by mean AP on validation).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/set_curve.py --minutes 30 --workdir runs/bench_set

Timing excludes evaluation; it is wall-clock time of the training steps on this machine (state the machine).
"""

from __future__ import annotations

from budgeted_run import best_within, parse_args, run

KEYS = ("ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125")


def _aps(row: dict) -> str:
    return " | ".join(f"{100 * row[k]:.1f}" if k in row else "-" for k in KEYS)


def main() -> None:
    args = parse_args(__doc__, "sprites_set_cpu", 2.0, "10,20,30", "runs/bench_set")
    val, test = run(args)
    print("| train min | step | val loss | val AP inf | 1 | 0.5 | 0.25 | 0.125 "
          "| test AP inf | 1 | 0.5 | 0.25 | 0.125 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in val:
        print(f"| {r['train_seconds'] / 60:.1f} | {r['step']} | {r['loss']:.4f} | {_aps(r)} | "
              f"{_aps(test.get(r['step'], {}))} |")
    print()
    for budget in [float(b) for b in args.budgets.split(",") if b]:
        best = best_within(val, budget, "ap_mean")
        if best is not None:
            t = test.get(best["step"], {})
            print(f"within {budget:g} min: best validation point step {best['step']} "
                  f"({best['train_seconds'] / 60:.1f} min) -> test AP inf/1/0.5/0.25/0.125 = {_aps(t)}")


if __name__ == "__main__":
    main()
