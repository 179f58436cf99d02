"""Throughput of ``slotlab segment``: images/s end to end (read, preprocess, model, write the label map, overlay and
npz) and for the model alone, on a folder of PNG scenes, with the CPU named.

    OMP_NUM_THREADS=1 python benchmarks/bench_segment.py --experiment tetrominoes_cpu --num 256 --threads 1
    python benchmarks/bench_segment.py --model tetrominoes            # a zoo model, or --workdir RUN_DIR

With ``--experiment`` the model has its initial (untrained) weights: the speed does not depend on the weights.
Prints one markdown row per batch size.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from slotlab.bench import cpu_name


def _model(args):
    from slotlab.api import LoadedModel, load
    from slotlab.experiments import get_experiment
    from slotlab.tasks import build_model

    if args.model or args.workdir:
        return load(args.model or args.workdir)
    cfg = get_experiment(args.experiment)
    return LoadedModel(build_model(cfg.model).eval(), cfg, f"{args.experiment} (untrained weights)")


def _scenes(folder: Path, num: int, resolution: int) -> None:
    from slotlab.data import generate_multi_dsprites, generate_tetrominoes

    generator = generate_tetrominoes if resolution == 35 else generate_multi_dsprites
    images = generator(num, 0)["image"]
    for i, image in enumerate(images):
        if image.shape[0] != resolution:
            image = np.asarray(Image.fromarray(image).resize((resolution, resolution), Image.BILINEAR))
        Image.fromarray(image).save(folder / f"scene_{i:05d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="tetrominoes_cpu", help="preset (untrained weights)")
    p.add_argument("--model", default=None, help="a zoo model instead")
    p.add_argument("--workdir", default=None, help="a run directory instead")
    p.add_argument("--num", type=int, default=256, help="images")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from slotlab.segment import segment_paths

    model = _model(args)
    R = model.config.model.resolution
    tmp = Path(tempfile.mkdtemp(prefix="bench_segment-"))
    try:
        (tmp / "in").mkdir()
        _scenes(tmp / "in", args.num, R)
        pixels = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp / "in").iterdir())])  # (B, R, R, 3)
        print(f"CPU: {cpu_name()}; torch {torch.__version__}, {args.threads} thread(s); model {model.source}, "
              f"{R}x{R}, K={model.config.model.num_slots}; {args.num} PNG images\n")
        print("| batch | segment end to end (images/s) | model forward only (images/s) |")
        print("|---:|---:|---:|")
        for batch_size in args.batch_sizes:
            segment_paths(model, [tmp / "in"], tmp / "warm", batch_size=batch_size, progress=False)  # warm-up
            start = time.perf_counter()
            segment_paths(model, [tmp / "in"], tmp / f"out{batch_size}", batch_size=batch_size, progress=False)
            end_to_end = args.num / (time.perf_counter() - start)
            start = time.perf_counter()
            for lo in range(0, args.num, batch_size):
                model.run(pixels[lo : lo + batch_size])
            forward = args.num / (time.perf_counter() - start)
            print(f"| {batch_size} | {end_to_end:.0f} | {forward:.0f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
