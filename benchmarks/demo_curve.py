"""Quality against wall-clock training minutes for the demo preset (FG-ARI, ARI, mBO on held-out scenes).

Trains ``--experiment`` (default: the demo's ``tetrominoes_cpu``) for ``--minutes`` of training time, evaluating
every ``--every`` minutes on the validation split (which picks the checkpoint) and, for the curve only, on the test
split. Prints a markdown table and, at each requested budget, the test metrics at the best validation point so far.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/demo_curve.py --minutes 30 --workdir runs/bench_demo

Timing excludes evaluation; it is wall-clock time of the training steps on this machine (state the machine).
"""

from __future__ import annotations

from budgeted_run import best_within, parse_args, run

from slotlab.viz import save_curves


def main() -> None:
    args = parse_args(__doc__, "tetrominoes_cpu", 1.0, "10,30", "runs/bench_demo")
    val, test = run(args)
    print("| train min | step | val FG-ARI | val ARI | val mBO | test FG-ARI | test ARI | test mBO | val MSE |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in val:
        t = test.get(r["step"], {})
        print(f"| {r['train_seconds'] / 60:.1f} | {r['step']} | {100 * r['fg_ari']:.1f} | {100 * r['ari']:.1f} | "
              f"{100 * r['mbo']:.1f} | {100 * t.get('fg_ari', float('nan')):.1f} | "
              f"{100 * t.get('ari', float('nan')):.1f} | {100 * t.get('mbo', float('nan')):.1f} | {r['mse']:.5f} |")
    print()
    for budget in [float(b) for b in args.budgets.split(",") if b]:
        best = best_within(val, budget, "fg_ari")
        if best is None:
            continue
        t = test.get(best["step"], {})
        print(f"within {budget:g} min: best validation point step {best['step']} "
              f"({best['train_seconds'] / 60:.1f} min) -> test FG-ARI {100 * t.get('fg_ari', float('nan')):.1f}, "
              f"ARI {100 * t.get('ari', float('nan')):.1f}, mBO {100 * t.get('mbo', float('nan')):.1f}")
    save_curves(args.workdir, args.workdir / "curves.png")
    print(f"\ncurves: {args.workdir / 'curves.png'}")


if __name__ == "__main__":
    main()
