"""DINOSAUR's pipeline (frozen features -> Slot Attention -> feature reconstruction) on built-in scenes, with a
frozen backbone made here, offline, against the same architecture with random frozen weights (no pretrained ViT
can be fetched on this machine).

1. Train a slotlab autoencoder (``--experiment``, default the demo preset ``tetrominoes_cpu``) for
   ``--ae-minutes``; its encoder (CNN + position embedding + MLP, (B, N, C) features at full resolution) is the
   "trained" backbone. The "random" backbone is the same encoder, freshly initialised.
2. Cache each backbone's features of the train and validation scenes (computed once, as the feature cache does).
3. Train the DINOSAUR model (slotlab.nn.dinosaur: input MLP, Slot Attention, MLP patch decoder with alpha masks,
   MSE on the features) on each backbone's features for ``--steps`` steps, for each of ``--seeds``, evaluating
   FG-ARI and mBO on the validation scenes every ``--eval-every`` steps.

With ``--backbone NAME_OR_DIR`` step 1 is skipped: the encoder of a zoo model (e.g. ``tetrominoes``) or of a
trained run directory is the trained backbone, and the scenes come from its generator with ``--data-seed`` (default
1), so that none of them was seen while the backbone trained (it trained on seed 0).

Writes ``OUT/dinosaur_offline.json`` (every curve point) and ``OUT/dinosaur_offline.png`` (curves).

    OMP_NUM_THREADS=1 python benchmarks/dinosaur_offline.py --ae-minutes 10 --steps 3000 --out runs/dino_offline
    OMP_NUM_THREADS=1 python benchmarks/dinosaur_offline.py --backbone tetrominoes --steps 3000 --out runs/dino_zoo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from slotlab.config import ModelConfig, TrainConfig, apply_overrides
from slotlab.data import build_splits
from slotlab.data.features import FeatureSplit, SceneSource
from slotlab.evaluate_features import evaluate_features
from slotlab.experiments import get_experiment
from slotlab.nn.dinosaur import Dinosaur
from slotlab.runs import load_model
from slotlab.tasks import TASKS, build_model
from slotlab.train import batch_indices, lr_at, train, train_step


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tetrominoes_cpu", help="autoencoder preset whose encoder is trained")
    p.add_argument("--ae-minutes", type=float, default=10.0, help="training time of the autoencoder")
    p.add_argument("--backbone", default=None, help="a zoo model or run directory whose encoder is the trained "
                                                   "backbone (no autoencoder is trained)")
    p.add_argument("--data-seed", type=int, default=1, help="scene seed with --backbone")
    p.add_argument("--pool", type=int, default=1, help="average pool x pool feature blocks into one token")
    p.add_argument("--steps", type=int, default=3000, help="DINOSAUR training steps per run")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--train-size", type=int, default=2000, help="training scenes (features cached once)")
    p.add_argument("--val-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/dinosaur_offline"))
    return p.parse_args()


@torch.no_grad()
def cache(encoder: torch.nn.Module, scenes, name: str, pool: int = 1) -> FeatureSplit:
    """Every scene's encoder features, computed once: float32 (items, N, C) in memory. ``pool`` > 1 averages
    pool x pool blocks of the feature map (B, C, H, W) into one token, as a ViT's patches do (N = (H // pool)^2)."""
    encoder.eval()
    feats = []
    for i in range(0, len(scenes), 64):
        f = encoder(scenes.batch(slice(i, i + 64), False)["image"])  # (B, N, C)
        if pool > 1:
            side = int(round(f.shape[1] ** 0.5))
            grid = f.transpose(1, 2).reshape(f.shape[0], f.shape[2], side, side)  # (B, C, H, W)
            f = torch.nn.functional.avg_pool2d(grid, pool).flatten(2).transpose(1, 2)  # (B, N', C)
        feats.append(f)
    return FeatureSplit(SceneSource(scenes, name), None, torch.cat(feats).numpy())


def run_dinosaur(train_set: FeatureSplit, val_set: FeatureSplit, num_slots: int, seed: int, args) -> list[dict]:
    """Train one DINOSAUR model on cached features; the validation curve."""
    torch.manual_seed(seed)
    _, N, C = train_set.cached.shape
    cfg = ModelConfig(task="features", num_slots=num_slots, slot_dim=64, mlp_hidden_dim=128, decoder_channels=128,
                      decoder_layers=2)
    model = Dinosaur(cfg, C, N)
    tc = TrainConfig(lr=4e-4, warmup_steps=200, decay_steps=100_000, grad_clip=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    task, curve, seconds = TASKS["features"], [], 0.0
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            r = evaluate_features(model, val_set, batch_size=64, seed=0)
            curve.append({"step": step, "train_seconds": round(seconds, 2),
                          **{k: r[k] for k in ("fg_ari", "mbo", "mse")}})
            print(f"    step {step:5d}  FG-ARI {100 * r['fg_ari']:5.1f}  mBO {100 * r['mbo']:5.1f}  "
                  f"MSE {r['mse']:.4f}", flush=True)
        if step == args.steps:
            break
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tc)
        index = batch_indices(step, seed, args.batch_size, len(train_set))
        train_step(model, optimizer, task, task.batch(train_set, index), "fp32", tc.grad_clip)
        seconds += time.perf_counter() - t0
    return curve


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {"trained": "tab:blue", "random": "tab:red"}
    for key, curve in results.items():
        backbone, seed = key.split("/")
        steps = [p["step"] for p in curve]
        for ax, metric in zip(axes, ("fg_ari", "mbo"), strict=True):
            ax.plot(steps, [100 * p[metric] for p in curve], color=colors[backbone],
                    linestyle="-" if seed.endswith("0") else "--", label=f"{backbone} backbone, {seed}")
    for ax, title in zip(axes, ("FG-ARI (val)", "mBO (val)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("DINOSAUR training step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [f"train.num_threads={args.threads}", f"data.train_size={args.train_size}",
             f"data.val_size={args.val_size}", "data.test_size=16"]
    if args.backbone:  # 1. the offline backbone: a trained model's encoder
        from slotlab.zoo import entries, entry_dir

        source = entry_dir(args.backbone) if args.backbone in entries() else Path(args.backbone)
        trained, trained_cfg = load_model(source, "best")
        cfg = apply_overrides(trained_cfg, [*sizes, f"data.seed={args.data_seed}"])
        ae = {"source": str(source)}
    else:  # 1. the offline backbone: a slotlab autoencoder's encoder (resumed if this folder already trained it)
        ae_dir = args.out / "autoencoder"
        cfg = apply_overrides(get_experiment(args.experiment), [
            f"train.max_minutes={args.ae_minutes}", "train.eval_every=1000000", *sizes])
        print(f"training the {args.experiment} autoencoder for {args.ae_minutes:g} min ...", flush=True)
        ae = train(cfg, ae_dir, resume=(ae_dir / "checkpoints" / "last.safetensors").is_file(), progress=False)
        trained, _ = load_model(ae_dir, "last")
    torch.manual_seed(12345)
    random = build_model(cfg.model)  # the same architecture, untrained
    # 2. cached features
    scenes = build_splits(cfg.data)
    splits = {name: (cache(m.encoder, scenes["train"], f"{name}/train", args.pool),
                     cache(m.encoder, scenes["val"], f"{name}/val", args.pool))
              for name, m in (("trained", trained), ("random", random))}
    # 3. DINOSAUR on each backbone, each seed
    results = {}
    for name, (train_set, val_set) in splits.items():
        for seed in args.seeds:
            print(f"  DINOSAUR on the {name} backbone, seed {seed}", flush=True)
            results[f"{name}/seed{seed}"] = run_dinosaur(train_set, val_set, cfg.model.num_slots, seed, args)
    final = {k: v[-1] for k, v in results.items()}
    summary = {}
    for name in splits:
        for metric in ("fg_ari", "mbo"):
            values = [final[f"{name}/seed{s}"][metric] for s in args.seeds]
            summary[f"{name}_{metric}"] = {"mean": float(np.mean(values)), "values": values}
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "autoencoder": {k: ae.get(k) for k in
              ("source", "step", "train_seconds", "fg_ari", "mbo")}, "summary": summary, "curves": results}
    (args.out / "dinosaur_offline.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(results, args.out / "dinosaur_offline.png")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'dinosaur_offline.json'} and {args.out / 'dinosaur_offline.png'}")


if __name__ == "__main__":
    main()
