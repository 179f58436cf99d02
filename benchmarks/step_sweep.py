"""Learning per step, not per minute: train several variants of a preset side by side (one process each) for a
number of steps and print validation FG-ARI / ARI / mBO against the step, so that designs can be compared by how
many steps they need (on a GPU, a CPU preset's half hour of steps takes a few minutes; the mathematics and so the
curve per step are the same, fp32 eager).

    python benchmarks/step_sweep.py --workdir runs/sweep --steps 30000 --every 1000 --minutes 7 \
        --variant paper=tetrominoes --variant learned=tetrominoes:model.slot_init=learned ...

A variant is NAME=PRESET[:KEY=VALUE,KEY=VALUE...]; --set applies to every variant. ``--parallel N`` runs at most
N at a time (default: all at once). Results also go to WORKDIR/sweep.json, and the curves to WORKDIR/sweep.png
(variants named ``NAME.sSEED`` share NAME's colour, one line per seed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ("fg_ari", "ari", "mbo")


def plot(results: dict, out: Path) -> None:
    """Validation FG-ARI / ARI / mBO against the step, one colour per variant (seeds ``NAME.sN`` share it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = list(dict.fromkeys(name.split(".s")[0] for name in results))
    colors = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(bases)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, column in zip(axes, COLUMNS, strict=True):
        for name, res in results.items():
            base = name.split(".s")[0]
            rows = res["val"]
            ax.plot([r["step"] for r in rows], [100 * r[column] for r in rows], color=colors[base], lw=1.2,
                    ls="-" if name.endswith(".s0") or ".s" not in name else "--",
                    label=base if name == next(n for n in results if n.split(".s")[0] == base) else None)
        ax.set_title(f"validation {column}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--variant", action="append", default=[], help="NAME=PRESET[:KEY=VALUE,...]")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: tabulate and draw every run already in WORKDIR (e.g. of several sweeps)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every variant")
    p.add_argument("--steps", type=int, default=30000)
    p.add_argument("--every", type=int, default=1000, help="validation every this many steps")
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget per run (0 = none)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--parallel", type=int, default=0, help="runs at a time (0 = all)")
    args = p.parse_args()
    if args.collect:
        report(collect(args.workdir), args.workdir)
        return
    if not args.variant:
        p.error("give at least one --variant (or --collect)")

    common = [f"train.steps={args.steps}", f"train.eval_every={args.every}", "train.eval_every_minutes=0",
              f"train.checkpoint_every={args.every * 5}", f"train.max_minutes={args.minutes}",
              f"train.num_threads={args.threads}", "train.log_every=500", *args.overrides]
    names = [spec.partition("=")[0] for spec in args.variant]
    taken = [n for n in names if (args.workdir / n).exists()]
    if taken or len(set(names)) != len(names):
        sys.exit(f"step_sweep: variant names must be new and distinct; {args.workdir} already holds {taken}")
    pending, running, done = list(args.variant), {}, {}
    limit = args.parallel or len(pending)
    while pending or running:
        while pending and len(running) < limit:
            spec = pending.pop(0)
            name, _, rest = spec.partition("=")
            preset, _, sets = rest.partition(":")
            workdir = args.workdir / name
            cmd = [sys.executable, "-m", "slotlab", "train", "--experiment", preset, "--workdir", str(workdir)]
            for kv in common + [s for s in sets.split(",") if s]:
                cmd += ["--set", kv]
            args.workdir.mkdir(parents=True, exist_ok=True)
            log = open(args.workdir / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ}), spec)
        finished = [n for n, (proc, _) in running.items() if proc.poll() is not None]
        for name in finished:
            done[name] = running.pop(name)
        if not finished:
            time.sleep(2)
    results = {}
    for name in [spec.partition("=")[0] for spec in args.variant]:
        proc, spec = done[name]
        results[name] = {"spec": spec, "returncode": proc.returncode, "val": val_rows(args.workdir / name)}
    report(results, args.workdir)


def val_rows(run: Path) -> list[dict]:
    """The validation rows of a run directory's metrics.jsonl (step, training seconds, FG-ARI, ARI, mBO)."""
    metrics = run / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return [{k: r[k] for k in ("step", "train_seconds", *COLUMNS)} for r in rows if r["kind"] == "val"]


def collect(workdir: Path) -> dict:
    """Every run directory under ``workdir``, sorted by name (variants of one NAME together)."""
    runs = sorted((d for d in workdir.iterdir() if (d / "metrics.jsonl").is_file()),
                  key=lambda d: (d.name.split(".s")[0], d.name))
    return {d.name: {"spec": json.loads((d / "config.json").read_text())["name"], "returncode": 0,
                     "val": val_rows(d)} for d in runs}


def report(results: dict, workdir: Path) -> None:
    """sweep.json, sweep.png and the markdown tables (one per metric) of ``results``."""
    (workdir / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    for column in COLUMNS:
        steps = sorted({r["step"] for res in results.values() for r in res["val"]})
        print(f"\nval {column} (%) by step\n")
        print("| variant | " + " | ".join(str(s) for s in steps) + " |")
        print("|---|" + "---:|" * len(steps))
        for name, res in results.items():
            by_step = {r["step"]: r[column] for r in res["val"]}
            cells = [f"{100 * by_step[s]:.1f}" if s in by_step else "" for s in steps]
            print(f"| {name} | " + " | ".join(cells) + " |")
    plot(results, workdir / "sweep.png")
    for name, res in results.items():
        if res["returncode"]:
            print(f"{name}: exit {res['returncode']} (see {workdir / (name + '.log')})")


if __name__ == "__main__":
    main()
