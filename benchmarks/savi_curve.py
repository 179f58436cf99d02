"""SAVi on built-in moving_sprites: video FG-ARI / ARI / mBO against wall-clock training minutes, conditional on
first-frame centres and unconditional (learned initial slots), for ``savi_sprites_cpu``.

Each variant trains for ``--minutes`` of training time on 6-frame clips, evaluating every ``--every`` minutes on the
320 validation videos (which pick the checkpoint) and, for the curve only, on the 320 held-out test videos (whole
24-frame videos). Writes ``<workdir>/savi_curve.json`` (every row, the machine), ``<workdir>/savi_curve.png`` (the
curves) and ``<workdir>/centers/scenes.gif`` (an animation of the conditional model), and prints a markdown table.

    OMP_WAIT_POLICY=ACTIVE python benchmarks/savi_curve.py --minutes 30 --workdir runs/savi_curve

Timing excludes evaluation; it is wall-clock time of the training steps on this machine (2 threads by default).
On a dedicated 2-core machine ``OMP_WAIT_POLICY=ACTIVE`` made a step 1.6x faster than ``PASSIVE`` (docs/video.md);
use ``PASSIVE`` when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from budgeted_run import best_within, run

from slotlab.bench import cpu_name

VARIANTS = {"centers": ["model.conditioning=centers"], "learned": ["model.conditioning=learned"]}
KEYS = (("fg_ari", "video FG-ARI"), ("ari", "video ARI"), ("mbo", "video mBO"), ("frame_fg_ari", "per-frame FG-ARI"))


def plot(results: dict, out: Path) -> None:
    """Video FG-ARI / ARI / mBO of each variant on the held-out videos, against training minutes (top) and steps
    (bottom: the per-step view, which does not depend on how loaded the machine was)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 3, figsize=(13, 7))
    for row, (axis, unit) in enumerate((("train_seconds", "training minutes"), ("step", "training step"))):
        for ax, (key, label) in zip(grid[row], KEYS[:3], strict=True):
            for name, res in results.items():
                rows = res["test"] or res["val"]
                xs = [r[axis] / 60 if axis == "train_seconds" else r[axis] for r in rows]
                ax.plot(xs, [r[key] for r in rows], marker="o", ms=3, label=name)
            ax.axhline(0.9, color="grey", lw=0.8, ls="--")
            ax.set_xlabel(unit)
            ax.set_title(f"{label} (held-out videos)")
            ax.set_ylim(-0.05, 1.0)
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="savi_sprites_cpu")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--every", type=float, default=3.0, help="minutes between evaluations")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--workdir", type=Path, default=Path("runs/savi_curve"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--replot", nargs="+", default=None, metavar="[LABEL=]JSON",
                   help="train nothing: draw the variants of these savi_curve.json files into one --workdir plot "
                        "(LABEL= names a file's variants 'LABEL: variant', e.g. to compare two designs)")
    args = p.parse_args()
    if args.replot:
        merged = {}
        for spec in args.replot:
            label, _, path = spec.rpartition("=")
            for name, res in json.loads(Path(path).read_text())["results"].items():
                merged[f"{label}: {name}" if label else name] = res
        args.workdir.mkdir(parents=True, exist_ok=True)
        plot(merged, args.workdir / "savi_curve.png")
        print(f"wrote {args.workdir / 'savi_curve.png'} ({', '.join(merged)})")
        return
    results = {}
    for name in args.variants:
        sub = argparse.Namespace(experiment=args.experiment, minutes=args.minutes, every=args.every,
                                 workdir=args.workdir / name, overrides=VARIANTS[name] + args.overrides)
        val, test = run(sub)
        results[name] = {"val": val, "test": [test[r["step"]] | {"step": r["step"]} for r in val if r["step"] in test]}
        best = best_within(val, args.minutes, "fg_ari")
        results[name]["test_at_best_val"] = test.get(best["step"]) if best else None
        print(f"| {name} | train min | step | " + " | ".join(label for _, label in KEYS) + " |")
        print("|---|---:|---:|" + "---:|" * len(KEYS))
        for r in results[name]["test"]:
            print(f"| test | {r['train_seconds'] / 60:.1f} | {r['step']} | "
                  + " | ".join(f"{100 * r[k]:.1f}" for k, _ in KEYS) + " |")
        print()
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()}
    (args.workdir / "savi_curve.json").write_text(json.dumps({"machine": machine, "minutes": args.minutes,
                                                             "results": results}, indent=1) + "\n")
    plot(results, args.workdir / "savi_curve.png")
    if "centers" in results:
        from slotlab.runs import viz_run

        viz_run(args.workdir / "centers", args.workdir / "centers" / "scenes.png")
    print(f"machine: {machine['cpu']} ({machine['cores']} cores); wrote {args.workdir / 'savi_curve.json'}, "
          f"{args.workdir / 'savi_curve.png'}")


if __name__ == "__main__":
    main()
