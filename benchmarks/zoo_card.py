"""Make a model-zoo entry from the run that trained it: the weights of its best checkpoint and its config
(:func:`slotlab.zoo.add_entry`), then card.md, curves.png and metrics.json.

    python benchmarks/zoo_card.py RUN_DIR src/slotlab/zoo/tetrominoes --name tetrominoes \\
        --machine "AMD EPYC, 2 cores (AVX2), 1 thread" --command "slotlab train --experiment ..." \\
        [--data SPEC ...] [--threads 1]

The card holds the data, the steps, the batch, the training wall time, the machine and precision, the learning
curve (validation FG-ARI / ARI / mBO against training time, from the run's metrics.jsonl), the test metrics of
the checkpoint chosen on validation on each ``--data`` spec (default: the run's held-out ``test`` split), the
test-time robustness table (T = 3, 5, 7 and K + 2 slots; none for video, which runs with its trained K and T) and
the command that reproduces the run.

``--test-iters 3 4 5 6 7`` also chooses the entry's test-time iterations (``model.test_iters``): the T with the
best FG-ARI on the run's validation scenes (ties: the smaller T); the card lists every candidate's scores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from robustness import robustness

from slotlab.bench import cpu_name
from slotlab.config import ExperimentConfig
from slotlab.runs import eval_run
from slotlab.tasks import get_task
from slotlab.viz import read_metrics, save_curves
from slotlab.zoo import add_entry


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def choose_test_iters(run: Path, candidates: list[int]) -> tuple[int, list[dict]]:
    """The T of ``candidates`` with the best validation score (the task's ``select_metric``, FG-ARI for object
    discovery; ties: the smaller T), and every candidate's row."""
    task = get_task(ExperimentConfig.load(run / "config.json"))
    keys = (*task.curves, task.select_metric)
    rows = [{"T": n, **{k: v for k, v in eval_run(run, "val", "best", num_iters=n).items() if k in keys}}
            for n in sorted(candidates)]
    return max(rows, key=lambda r: (r[task.select_metric], -r["T"]))["T"], rows


def describe(cfg: ExperimentConfig, test_t: int) -> str:
    """The card's first sentence: what the model is."""
    m = cfg.model
    if m.task == "video":
        return (f"Video object segmentation and tracking with SAVi (Kipf et al., ICLR 2022), preset `{cfg.name}`: "
                f"{m.resolution}x{m.resolution} frames, K={m.num_slots} slots of size {m.slot_dim}, {m.num_iters} "
                f"corrector iteration per frame ({m.attention} attention), initial slots from `{m.conditioning}`, "
                f"{m.target} target; trained on {cfg.data.clip_length}-frame clips, evaluated on whole "
                f"{cfg.data.num_frames}-frame videos.")
    common = (f"preset `{cfg.name}`: {m.resolution}x{m.resolution} input, K={m.num_slots} slots, T={m.num_iters} "
              f"iterations in training and {test_t} at test time, slot size {m.slot_dim}, slot init `{m.slot_init}`"
              + (", implicit gradient with the straight-through initial-slot gradient (BO-QSA)"
                 if m.implicit_grad and m.straight_through else ""))
    if get_task(cfg).zoo_comparison:  # object discovery
        return (f"Object discovery with Slot Attention (Locatello et al., NeurIPS 2020), {common}, {m.decoder} "
                f"decoder, background `{m.background}`.")
    return (f"Set prediction with Slot Attention (Locatello et al., NeurIPS 2020), {common}, a per-slot property "
            f"head matched to the objects by the Hungarian algorithm"
            + (" (each slot's attention centroid beside it)" if m.head_positions else "") + ".")


def write_card(run: Path, entry: Path, name: str, machine: str, command: str, specs: list[str],
               status: str = "", test_iters: list[dict] | None = None) -> Path:
    """Card, curves and metrics of the zoo entry ``entry`` made from ``run``; the scores are the entry's own (its
    config, ``model.test_iters`` included)."""
    entry.mkdir(parents=True, exist_ok=True)
    cfg = ExperimentConfig.load(entry / "config.json")
    task = get_task(cfg)
    labels = task.curves  # {metric key: label}, e.g. FG-ARI / ARI / mBO
    header = " | ".join(labels.values())
    train_rows, val_rows = read_metrics(run)
    last = (train_rows or val_rows)[-1]
    best = max(val_rows, key=lambda r: r[task.select_metric])
    save_curves(run, entry / "curves.png")
    tests = {spec: eval_run(entry, spec, "best") for spec in specs}
    video = cfg.model.task == "video"
    robust = [] if video else robustness(entry, specs[0], "best", None)  # SAVi runs with its trained K and T
    training = {"steps": last["step"], "hours": round(last["train_seconds"] / 3600, 2), "machine": machine}
    (entry / "metrics.json").write_text(json.dumps({"training": training, "test": tests, "robustness": robust,
                                                    "best_val": best, "test_iters_val": test_iters or []},
                                                   indent=1) + "\n")
    m, d, t = cfg.model, cfg.data, cfg.train
    test_t = m.test_iters or m.num_iters

    def cells(r: dict) -> str:
        return " | ".join(pct(r[k]) for k in labels)

    items, samples = ("videos", f"clips of {d.clip_length} frames") if video else ("scenes", "images")
    lines = [
        f"# `{name}`",
        "",
        *([f"**Status:** {status}", ""] if status else []),
        describe(cfg, test_t),
        "",
        "## Training",
        "",
        f"- data: built-in `{d.name}` generator, seed {d.seed}: {items} [0, {d.train_size}) train, the next "
        f"{d.val_size} validate (they choose the checkpoint), the next {d.test_size} test",
        f"- steps: {last['step']:,} of batch {t.batch_size} ({last['step'] * t.batch_size:,} {samples}); "
        f"Adam, lr {t.lr:g}, warmup {t.warmup_steps}, decay {t.decay_rate:g} per {t.decay_steps:,} steps",
        f"- training wall time: {last['train_seconds'] / 3600:.2f} h (evaluation excluded)",
        f"- machine: {machine}; precision `{t.precision}`",
        f"- checkpoint: step {best['step']:,}, the best validation `{task.select_metric}` "
        f"({'; '.join(f'{label} {pct(best[k])}' for k, label in labels.items())})",
        "",
        "Reproduce (resumable: repeat with `--resume` until the step count is reached):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"## Learning curve (validation {items})",
        "",
        "![curves](curves.png)",
        "",
        *(["## Test-time iterations (chosen on validation scenes)", "",
           f"| T | {header} |", "|---:|" + "---:|" * len(labels),
           *[f"| {r['T']}{' (chosen)' if r['T'] == test_t else ''} | {cells(r)} |" for r in test_iters], ""]
          if test_iters else []),
        f"## Test metrics (checkpoint chosen on validation, T={test_t})",
        "",
        f"| data | {items} | {header} |",
        "|---|---:|" + "---:|" * len(labels),
        *[f"| `{spec}` | {int(r.get('num_scenes', r.get('num_videos', 0)))} | {cells(r)} |"
          for spec, r in tests.items()],
        "",
        *([f"## Test-time robustness (`{specs[0]}`)", "", f"| setting | {header} |", "|---|" + "---:|" * len(labels),
           *[f"| {r['setting']} | {cells(r)} |" for r in robust], ""] if robust else []),
        f"Evaluated on {cpu_name()}.",
        "",
    ]
    card = entry / "card.md"
    card.write_text("\n".join(lines))
    return card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("entry", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--data", nargs="+", default=["test"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--status", default="", help="a line on the card's top, e.g. how far from converged it is")
    ap.add_argument("--test-iters", type=int, nargs="+", default=None,
                    help="candidate test-time T; the best on validation scenes goes into the entry's config")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    chosen, rows = choose_test_iters(args.run, args.test_iters) if args.test_iters else (None, None)
    add_entry(args.run, args.name, root=args.entry.parent, overwrite=True, test_iters=chosen)
    card = write_card(args.run, args.entry, args.name, args.machine, args.command, args.data, args.status, rows)
    print(card.read_text())


if __name__ == "__main__":
    main()
