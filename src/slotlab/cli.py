"""The ``slotlab`` command line: argument parsing only; the work is done by the library modules.

    slotlab train --experiment NAME --workdir DIR [--set key=value ...] [--resume [--allow-change K|T|data]]
    slotlab eval  --workdir DIR [--data SPEC] [--num-iters T] [--num-slots K] [--json FILE]
    slotlab data generate NAME --out DIR --num N --seed S [--force]
    slotlab data convert KIND:FILE --out DIR [--start A --stop B] [--force]
    slotlab data convert-movi RELEASE_DIR --out DIR [--resolution 64] [--splits train validation] [--force]
    slotlab viz   --workdir DIR --out FILE.png|DIR
    slotlab segment (--model NAME | --workdir DIR) IMAGE_OR_DIR... --out OUTDIR [--num-slots K] [--num-iters T]
    slotlab export (--model NAME | --workdir DIR) --data SPEC --out FILE.npz
    slotlab zoo list | zoo add RUN_DIR --name NAME
    slotlab report --workdir DIR
    slotlab demo  [--workdir DIR]
    slotlab experiments
    slotlab bench module [--threads 1 2] [--rounds R] [--shapes clevr6 ... | BxNxDxK ...]
    slotlab bench gpu [--presets clevr6:64 multi_dsprites:64] [--modes ...] [--profile MODE ...] [--json FILE]
    slotlab bench train [--presets tetrominoes multi_dsprites clevr6:2 ...] [--threads 1 2] [--rounds R] [--batch B]
    slotlab convert official-tf CHECKPOINT_DIR --out DIR [--task discovery|set] [--force]
"""

from __future__ import annotations

import os

# OpenMP threads that spin at barriers collapse when another process holds a core; passive waiting avoids it.
# Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slotlab", description="Slot Attention toolkit: train, evaluate, visualise.")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_data, _add_viz_demo, _add_bench, _add_convert):
        add(sub)
    return p


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train an experiment preset")
    t.add_argument("--experiment", required=True, help="preset name (see `slotlab experiments`)")
    t.add_argument("--workdir", required=True, type=Path, help="run directory (created)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-3 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run in --workdir from its last checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--allow-change", action="append", default=[], metavar="K|T|data",
                   help="with --resume: accept a change of the number of slots (K), iterations (T) or the data "
                        "(recorded in history.jsonl; repeatable). Other model changes are refused")
    t.add_argument("--data", default=None, metavar="SPEC",
                   help="train on KIND:FILE[@A:B] (a multi_object_datasets TFRecord; default range: the paper's "
                        "first 60K/70K records) or cache:DIR instead of the built-in data (docs/datasets.md); "
                        "features presets (DINOSAUR): coco:DIR or voc:DIR (docs/real_world.md)")
    t.add_argument("--val-data", default=None, metavar="SPEC",
                   help="validation data (default: the data.val_size scenes after the training range)")


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a trained run: FG-ARI, ARI, mBO, MSE (set prediction: AP table)")
    _model_args(e)
    e.add_argument("--data", default="test",
                   help="test or val (the run's built-in splits), cache:DIR, KIND:FILE[@A:B|@test|@test320] "
                        "(e.g. tetrominoes:FILE@test; docs/datasets.md) or folder:DIR (docs/your_data.md)")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--num-iters", type=int, default=None, help="Slot Attention iterations at test time")
    e.add_argument("--num-slots", type=int, default=None, help="number of slots at test time")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--limit", type=int, default=None, help="evaluate only the first N scenes")
    e.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:N or auto")
    e.add_argument("--json", type=Path, default=None, help="also write the metrics to this JSON file")


def _add_data(sub) -> None:
    d = sub.add_parser("data", help="built-in datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    g = dsub.add_parser("generate", help="generate a built-in dataset into a cache directory")
    g.add_argument("name", help="tetrominoes, multi_dsprites or sprites_set")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--num", required=True, type=int)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--start", type=int, default=0)
    g.add_argument("--force", action="store_true", help="replace --out if it is a slotlab cache directory")
    c = dsub.add_parser("convert", help="convert a TFRecord range to a fast local cache directory")
    c.add_argument("spec", help="KIND:FILE[@A:B], e.g. tetrominoes:tetrominoes_train.tfrecords@train, or "
                                "folder:DIR[@split] (then --resolution)")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--start", type=int, default=None, help="first record (default: the spec's range, else 0)")
    c.add_argument("--stop", type=int, default=None, help="one past the last record (default: the end)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--resolution", type=int, default=None, help="folder:DIR: the side of the square images")
    c.add_argument("--resize", default="crop", choices=["crop", "pad", "stretch"], help="folder:DIR: fitting rule")
    c.add_argument("--force", action="store_true", help="replace --out if it is a slotlab cache directory")


    mv = dsub.add_parser("convert-movi", help="convert MOVi (Kubric) TFDS shards to video caches, no TensorFlow")
    mv.add_argument("source", type=Path, help="the release directory holding *-train.tfrecord-* shards")
    mv.add_argument("--out", required=True, type=Path, help="writes OUT/<split> per split (train with data.path)")
    mv.add_argument("--splits", nargs="+", default=["train", "validation"])
    mv.add_argument("--resolution", type=int, default=None, help="downsample frames to this size (SAVi: 64)")
    mv.add_argument("--max-instances", type=int, default=10, help="objects per video (MOVi-A/B/C: 10; D/E: 23)")
    mv.add_argument("--limit", type=int, default=None, help="convert only the first N videos of each split")
    mv.add_argument("--no-progress", action="store_true", help="no progress bar")
    mv.add_argument("--force", action="store_true", help="replace OUT/<split> if it is a slotlab cache directory")


def _add_viz_demo(sub) -> None:
    v = sub.add_parser("viz", help="draw inputs, reconstructions, per-slot masks and attention")
    _model_args(v)
    v.add_argument("--out", required=True, type=Path)
    v.add_argument("--num-scenes", type=int, default=6)
    v.add_argument("--checkpoint", default="best", choices=["best", "last"])
    v.add_argument("--data", default="test", help="which scenes: as eval --data (default: the run's test split)")

    r = sub.add_parser("report", help="write WORKDIR/report.html: metrics, curves and the run's pictures")
    r.add_argument("--workdir", required=True, type=Path)

    s = sub.add_parser("segment", help="segment images or folders: label maps, overlays, slots (docs/your_data.md)")
    _model_args(s)
    s.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    s.add_argument("--out", required=True, type=Path, help="output folder (outside the input folders)")
    s.add_argument("--num-slots", type=int, default=None)
    s.add_argument("--num-iters", type=int, default=None)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    x = sub.add_parser("export", help="write the slots, masks and metadata of every scene of a split to .npz")
    _model_args(x)
    x.add_argument("--data", required=True, help="as eval --data (test, val, cache:DIR, KIND:FILE, folder:DIR)")
    x.add_argument("--out", required=True, type=Path, help="FILE.npz")
    x.add_argument("--num-slots", type=int, default=None)
    x.add_argument("--num-iters", type=int, default=None)
    x.add_argument("--batch-size", type=int, default=64)
    x.add_argument("--device", default="cpu")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")

    z = sub.add_parser("zoo", help="the models shipped with slotlab")
    zsub = z.add_subparsers(dest="zoo_command", required=True)
    zsub.add_parser("list", help="list the zoo's models")
    za = zsub.add_parser("add", help="make a zoo entry (weights + config.json) from a run's best checkpoint")
    za.add_argument("run", type=Path, help="run directory")
    za.add_argument("--name", required=True)
    za.add_argument("--root", type=Path, default=None, help="zoo directory (default: $SLOTLAB_ZOO or the package's)")
    za.add_argument("--overwrite", action="store_true")

    m = sub.add_parser("demo", help="the quick start: train the CPU preset on built-in Tetrominoes, report")
    m.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    m.add_argument("--experiment", default="tetrominoes_cpu")
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    m.add_argument("--resume", action="store_true")

    sub.add_parser("experiments", help="list the presets")


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks that print markdown tables (never pass/fail)")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    bm = bsub.add_parser("module", help="Slot Attention forward+backward: slotlab fast / plain / slot-attention")
    bm.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads, one table each")
    bm.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape")
    bm.add_argument("--shapes", nargs="+", default=["clevr6", "multi_dsprites", "tetrominoes", "set_prediction"],
                    help="preset names or BxNxDxK (e.g. 8x16384x64x7)")
    bm.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    bt = bsub.add_parser("train", help="training-step images/s: slotlab / plain formulation / Keras official")
    bt.add_argument("--presets", nargs="+", default=["tetrominoes", "multi_dsprites", "clevr6:2"],
                    help="autoencoder presets, NAME or NAME:BATCH (the batch for that preset)")
    bt.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="threads, one table (subprocess) each")
    bt.add_argument("--rounds", type=int, default=5, help="interleaved rounds per preset")
    bt.add_argument("--batch", type=int, default=16, help="batch size of presets given without :BATCH")
    bt.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    bt.add_argument("--no-keras", action="store_true", help="skip the Keras (TensorFlow) implementation")

    bg = bsub.add_parser("gpu", help="GPU training-step images/s: fp32 / bf16 / bf16 + compile (needs CUDA)")
    bg.add_argument("--presets", nargs="+", default=["clevr6:64", "multi_dsprites:64"],
                    help="autoencoder presets, NAME or NAME:BATCH")
    bg.add_argument("--modes", nargs="+", default=None, help="some of slotlab.bench.gpu.MODES (default: DEFAULT_MODES)")
    bg.add_argument("--steps", type=int, default=10, help="steps per mode per round")
    bg.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    bg.add_argument("--warmup", type=int, default=3, help="warm-up steps per mode (compilation included)")
    bg.add_argument("--batch", type=int, default=64, help="batch size of presets given without :BATCH")
    bg.add_argument("--profile", nargs="*", default=[], help="modes whose heaviest CUDA kernels to list")
    bg.add_argument("--no-parity", action="store_true", help="skip the reconstruction parity table")
    bg.add_argument("--json", type=Path, default=None, help="also write the results as JSON")


def _add_convert(sub) -> None:
    c = sub.add_parser("convert", help="convert released checkpoints into a slotlab run directory")
    csub = c.add_subparsers(dest="convert_command", required=True)
    o = csub.add_parser("official-tf", help="google-research/slot_attention TF2 checkpoints (needs slotlab[tf])")
    o.add_argument("checkpoint", type=Path, help="checkpoint directory (latest ckpt-N) or prefix DIR/ckpt-N")
    o.add_argument("--out", required=True, type=Path, help="run directory to write (eval/viz --workdir)")
    o.add_argument("--task", choices=["discovery", "set"], default=None, help="default: detect from the variables")
    o.add_argument("--num-slots", type=int, default=None, help="K (not stored in checkpoints; official 7 / 10)")
    o.add_argument("--resolution", type=int, default=128, help="image size (not stored in checkpoints)")
    o.add_argument("--force", action="store_true", help="replace --out if it is a slotlab run directory")


def _model_args(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--workdir", type=Path, help="a run directory")
    which.add_argument("--model", default=None, metavar="NAME", help="a zoo model (slotlab zoo list)")


def _model_dir(args) -> Path:
    """The run directory of --workdir, or the zoo entry directory of --model."""
    if args.model is None:
        return args.workdir
    from slotlab.zoo import entry_dir

    return entry_dir(args.model)


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error a user can cause ends in one line on stderr (no traceback) and an exit status:
    2 bad input or a refusal, 1 a failed run (a non-finite loss, a locked run, a full disk), 128 + N a signal."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from slotlab.train import TrainingInterrupted

    try:
        return _dispatch(args)
    except TrainingInterrupted as err:  # Ctrl-C or SIGTERM: a checkpoint was written
        print(f"slotlab {args.command}: {err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"slotlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except (KeyError, TypeError) as err:
        if not _refused_by_slotlab(err):  # a bug (a failed lookup or call inside the code), not bad input
            traceback.print_exc()
            print(f"slotlab {args.command}: internal error: {type(err).__name__}: {err} (a bug in slotlab; the "
                  "traceback above says where)", file=sys.stderr)
            return 1
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"slotlab {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
            NotADirectoryError) as err:
        msg = err
        print(f"slotlab {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:  # e.g. NonFiniteLossError, LockedError, WriteError (disk full)
        print(f"slotlab {args.command}: error: {err}", file=sys.stderr)
        return 1


def _refused_by_slotlab(err: BaseException) -> bool:
    """Whether ``err`` (a KeyError or TypeError) is one of slotlab's own refusals of bad input, raised by a
    ``raise`` statement in slotlab's code (an unknown experiment or config key, say), rather than a failed
    lookup or call somewhere inside (a bug, which should show its traceback)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    inside = Path(last.filename).resolve().is_relative_to(Path(__file__).resolve().parent)
    return inside and (last.line or "").lstrip().startswith("raise ")


def _dispatch(args) -> int:
    from slotlab import runs

    if args.command == "bench":
        return _bench(args)
    if args.command == "experiments":
        from slotlab.experiments import EXPERIMENTS

        for name, fn in EXPERIMENTS.items():
            print(f"{name:20s} {fn().description}")
        return 0
    if args.command == "train":
        result = runs.train_run(args.experiment, args.workdir, args.overrides, args.resume, not args.no_progress,
                                args.data, args.val_data, args.allow_change)
        print(json.dumps(result, indent=2))
        return 0
    if args.command == "eval":
        return _eval(args)
    if args.command == "data":
        return _data(args)
    if args.command == "viz":
        pictures = runs.viz_run(_model_dir(args), args.out, args.num_scenes, args.checkpoint, args.data)
        print("wrote " + ", ".join(str(path) for path in pictures))
        return 0
    if args.command == "report":
        from slotlab.report import write_report

        print(f"wrote {write_report(args.workdir)}")
        return 0
    if args.command in ("segment", "export"):
        return _segment_or_export(args)
    if args.command == "zoo":
        from slotlab import zoo

        if args.zoo_command == "list":
            print("\n".join(zoo.entries()) or f"the zoo ({zoo.zoo_root()}) is empty")
            return 0
        print(f"wrote {zoo.add_entry(args.run, args.name, args.root, args.overwrite)}")
        return 0
    if args.command == "demo":
        report = runs.demo(args.workdir, args.experiment, args.overrides, args.resume)
        print(f"demo done: open {report}")
        return 0
    if args.command == "convert":
        from slotlab.interop.official_tf import convert_official_tf

        out = convert_official_tf(args.checkpoint, args.out, args.task, args.num_slots, args.resolution,
                                  args.force)
        print(f"wrote {out}: evaluate with `slotlab eval --workdir {out}`")
        return 0
    raise ValueError(f"unknown command {args.command}")


def _bench(args) -> int:
    """slotlab bench module | train | gpu: print the tables."""
    if args.bench_command == "train":
        from slotlab.bench import train_step

        cases = [train_step.parse_case(spec, args.batch) for spec in args.presets]
        rows = train_step.bench_train(cases, args.threads, args.rounds, not args.no_memory, not args.no_keras)
        print(train_step.format_train_table(rows))
        return 0
    if args.bench_command == "gpu":
        from slotlab.bench import gpu

        cases = [gpu.parse_case(spec, args.batch) for spec in args.presets]
        modes = args.modes or gpu.DEFAULT_MODES
        results = gpu.bench_gpu(cases, modes, args.steps, args.rounds, args.warmup, not args.no_parity,
                                      args.profile)
        print(gpu.format_gpu_tables(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        return 0
    from slotlab.bench import module

    shapes = [module.parse_shape(spec) for spec in args.shapes]
    rows = module.bench_module(shapes, args.threads, args.rounds, memory=not args.no_memory)
    print(module.format_module_table(rows))
    return 0


def _eval(args) -> int:
    """slotlab eval: the metrics line, and --json FILE|DIR (checked before the evaluation)."""
    from slotlab import runs

    json_out = runs.output_file(args.json, "metrics.json", "eval --json") if args.json else None
    result = runs.eval_run(_model_dir(args), args.data, args.checkpoint, args.num_slots, args.num_iters,
                           args.batch_size, args.limit, args.device)
    from slotlab.tasks import get_task

    print(get_task(runs.load_run_config(_model_dir(args))).format(result))
    if json_out:
        from slotlab.rundir import atomic_write

        atomic_write(json_out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_out}")
    return 0


def _data(args) -> int:
    """slotlab data generate | convert | convert-movi, each under the --out rules (slotlab.rundir)."""
    from slotlab import runs

    if args.data_command == "convert" and args.spec.startswith("folder:"):
        from slotlab.data.folder_convert import convert_folder

        if args.resolution is None:
            raise ValueError("data convert folder:DIR needs --resolution R (the model's image side)")
        from slotlab.rundir import check_output, output_lock

        with output_lock(args.out):  # the --out rules of every converter (slotlab.rundir.check_output)
            check_output(args.out, "cache", args.force, sources=(args.spec[len("folder:"):].split("@")[0],))
            path = convert_folder(args.spec, args.out, args.resolution, args.resize, not args.no_progress)
        print(f"wrote {path}")
        return 0
    if args.data_command == "convert-movi":
        from slotlab.data.movi import convert_movi
        from slotlab.rundir import check_output, output_lock

        for split in args.splits:
            with output_lock(args.out / split):  # the --out rules of every converter
                check_output(args.out / split, "cache", args.force, sources=(args.source,))
                path = convert_movi(args.source, args.out / split, split, resolution=args.resolution,
                                    max_instances=args.max_instances, limit=args.limit,
                                    progress=not args.no_progress)
            print(f"wrote {path}")
        return 0
    if args.data_command == "convert":
        path = runs.convert_data(args.spec, args.out, args.start, args.stop, not args.no_progress, args.force)
        print(f"wrote {path}")
        return 0
    path = runs.generate_data(args.name, args.out, args.num, args.seed, args.start, args.force)
    print(f"wrote {args.num} {args.name} scenes to {path}")
    return 0


def _segment_or_export(args) -> int:
    from slotlab import runs
    from slotlab.api import load
    from slotlab.distributed import resolve_device

    model = load(_model_dir(args)).to(resolve_device(args.device, f"{args.command} --device"))
    model.source = args.model or str(args.workdir)
    if args.command == "export":
        from slotlab.export import export_slots

        scenes = runs.task_data(args.data, model.config)
        out = export_slots(model, scenes, args.data, args.out, batch_size=args.batch_size, num_slots=args.num_slots,
                           num_iters=args.num_iters, progress=not args.no_progress)
        print(f"wrote {out} ({len(scenes)} scenes)")
        return 0
    from slotlab.segment import segment_paths

    index = segment_paths(model, args.inputs, args.out, batch_size=args.batch_size, num_slots=args.num_slots,
                          num_iters=args.num_iters, progress=not args.no_progress)
    print(f"wrote {len(index['outputs'])} segmentations to {args.out} (index.html)")
    for item in index["skipped"]:
        print(f"slotlab segment: skipped {item['input']}: {item['error']}", file=sys.stderr)
    return 1 if index["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
