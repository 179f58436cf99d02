"""What the CLI commands do, as plain functions over a run directory (usable from Python and scripts too)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from slotlab.checkpoint import load_checkpoint
from slotlab.config import ExperimentConfig, apply_overrides
from slotlab.data import SceneSet, write_cache
from slotlab.experiments import get_experiment
from slotlab.tasks import get_task

log = logging.getLogger(__name__)


def _rank0() -> bool:
    """Whether this process writes run files: always on one process, rank 0 under torchrun."""
    return int(os.environ.get("RANK", "0")) == 0


def train_run(experiment: str, workdir: Path, overrides: list[str], resume: bool, progress: bool = True,
              data: str | None = None, val_data: str | None = None) -> dict:
    """``slotlab train``: a new run from a preset (+ overrides), or ``resume`` the run in ``workdir``.

    ``data`` (``--data KIND:PATH`` or ``cache:DIR``) replaces the built-in training split; validation is
    ``val_data`` or the held-out scenes after the training range (:func:`slotlab.data.specs.training_specs`).
    """
    from slotlab.train import set_threads, train

    workdir = Path(workdir)
    if resume:
        cfg = load_run_config(workdir)
        if experiment and cfg.name != experiment:
            raise ValueError(f"--resume: {workdir} holds experiment {cfg.name!r}, not {experiment!r}")
    else:
        cfg = get_experiment(experiment)
    apply_overrides(cfg, overrides)
    set_threads(cfg.train.num_threads)
    if resume and overrides and _rank0():
        cfg.save(workdir / "config.json")
    splits = data_splits(workdir, cfg, data, val_data, resume)
    return train(cfg, workdir, resume=resume, progress=progress, splits=splits)


def data_splits(workdir: Path, cfg: ExperimentConfig, data: str | None, val_data: str | None,
                resume: bool) -> dict[str, SceneSet] | None:
    """Train and val SceneSets of ``--data`` / ``--val-data`` (None: the preset's built-in data). The specs are
    kept in ``WORKDIR/data.json`` so that ``--resume`` reads the same data without repeating them."""
    from slotlab.data.specs import load_scenes, training_specs

    task = get_task(cfg)
    if task.data_spec is not None:  # the spec names the dataset in the config (features task: coco:DIR, voc:DIR)
        if val_data is not None:
            raise ValueError(f"--val-data: a {task.name} run takes its validation images from its dataset "
                             "(docs/real_world.md)")
        if data is not None:
            task.data_spec(cfg.data, data)
        return None
    record = Path(workdir) / "data.json"
    if data is None and resume and record.is_file():
        data, val_data = (json.loads(record.read_text())[key] for key in ("data", "val_data"))
    if data is None:
        if val_data is not None:
            raise ValueError("--val-data needs --data (the built-in data has its own validation split)")
        return None
    if not get_task(cfg).scene_specs:
        raise ValueError(f"--data: a {cfg.model.task} run reads the data its config names (data.name / data.path)")
    if data.startswith("folder:"):  # a folder of images (slotlab.data.folder, docs/your_data.md)
        from slotlab.data.folder import folder_training_splits

        splits = folder_training_splits(data, cfg.model.resolution, cfg.data.resize, val_data)
        data_spec_record(workdir, data, val_data, resume)
        return splits
    if cfg.train.report_test:
        raise ValueError("train.report_test needs the built-in data; with --data evaluate the test range after "
                         "training (slotlab eval --data KIND:PATH@test)")
    train_spec, val_spec = training_specs(data, val_data, cfg.data.val_size)
    log.info("training on %s, validating on %s", train_spec, val_spec)
    splits = {"train": load_scenes(train_spec), "val": load_scenes(val_spec)}
    data_spec_record(workdir, data, val_data, resume)
    return splits


def data_spec_record(workdir: Path, data: str, val_data: str | None, resume: bool) -> None:
    """Keep ``--data`` / ``--val-data`` in ``WORKDIR/data.json`` for ``--resume`` (a new run only)."""
    if not resume and not (Path(workdir) / "checkpoints" / "last.safetensors").is_file():
        Path(workdir).mkdir(parents=True, exist_ok=True)
        if _rank0():
            (Path(workdir) / "data.json").write_text(json.dumps({"data": data, "val_data": val_data}, indent=2) + "\n")


def load_run_config(workdir: Path) -> ExperimentConfig:
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"run directory not found: {workdir}")
    return ExperimentConfig.load(workdir / "config.json")


def load_model(workdir: Path, checkpoint: str = "best") -> tuple[torch.nn.Module, ExperimentConfig]:
    """The run's model with the weights of ``checkpoints/<checkpoint>.safetensors`` (falls back to last); a zoo
    entry directory (``slotlab.zoo``) gives its ``model.safetensors``."""
    cfg = load_run_config(workdir)
    path = Path(workdir) / "checkpoints" / f"{checkpoint}.safetensors"
    if not path.is_file():
        path = Path(workdir) / "checkpoints" / "last.safetensors"
    if not path.is_file() and (Path(workdir) / "model.safetensors").is_file():
        path = Path(workdir) / "model.safetensors"
    model = get_task(cfg).build_model(cfg)
    load_checkpoint(path, model)
    model.eval()
    return model, cfg


def resolve_data(spec: str, cfg: ExperimentConfig):
    """``test`` / ``val`` / ``train`` (the run's splits, from its data config), or for a task that reads scene
    specs, ``cache:DIR`` (a generated or converted cache directory) or ``KIND:FILE`` (a multi_object_datasets
    TFRecord, e.g. ``tetrominoes:tetrominoes_train.tfrecords@test``)."""
    task = get_task(cfg)
    if spec in ("test", "val", "train"):
        return task.splits(cfg)[spec]
    if not task.scene_specs:
        raise ValueError(f"--data {spec!r}: a {task.name} run uses 'test', 'val' or 'train' (its data config "
                         "names the dataset)")
    if spec.startswith("folder:"):  # a folder of images, fitted to the model (docs/your_data.md)
        from slotlab.data.folder import folder_scenes

        return folder_scenes(spec, cfg.model.resolution, cfg.data.resize)
    from slotlab.data.specs import load_scenes

    return load_scenes(spec)  # KIND:PATH[@A:B | @NAME] or cache:DIR[@A:B] (docs/datasets.md)


def task_data(spec: str, cfg: ExperimentConfig):
    """The scenes named by ``--data`` for the run's task, checked against the model's resolution."""
    scenes = resolve_data(spec, cfg)
    if scenes.resolution != cfg.model.resolution:
        raise ValueError(f"--data {spec}: images are {scenes.resolution}px, the model expects {cfg.model.resolution}")
    return scenes


def eval_run(workdir: Path, data: str = "test", checkpoint: str = "best", num_slots: int | None = None,
             num_iters: int | None = None, batch_size: int = 64, limit: int | None = None,
             device: str = "cpu") -> dict:
    """``slotlab eval``: metrics of the run's model on ``data``, its forward on ``device`` ("cpu", "cuda", "auto":
    the metrics are computed on the CPU either way; each scene's initial-slot noise is seeded from its pixels on
    the CPU, slotlab.noise, so devices differ only by their arithmetic)."""
    from slotlab.distributed import resolve_device

    model, cfg = load_model(workdir, checkpoint)
    model.to(resolve_device(device, "eval --device"))
    task = get_task(cfg)
    scenes = task_data(data, cfg)
    result = task.evaluate(model, scenes, batch_size=batch_size, num_slots=num_slots, num_iters=num_iters,
                      seed=cfg.train.seed, limit=limit)
    return {**result, "data": data, "checkpoint": checkpoint}


def convert_data(spec: str, out: Path, start: int | None = None, stop: int | None = None,
                 progress: bool = True) -> Path:
    """``slotlab data convert KIND:PATH --out DIR``: records [start, stop) (or the spec's range) to a cache dir."""
    from slotlab.data.convert import convert_tfrecord
    from slotlab.data.specs import parse_data_spec

    parsed = parse_data_spec(spec)
    if parsed.kind in ("cache", "clevr"):
        raise ValueError(f"data convert {spec!r}: expected a TFRecord spec KIND:FILE, not {parsed.kind}:")
    start = parsed.start if start is None else start
    stop = parsed.stop if stop is None else stop
    return convert_tfrecord(parsed.kind, parsed.path, out, start, stop, progress=progress)


def generate_data(name: str, out: Path, num: int, seed: int, start: int = 0) -> Path:
    """``slotlab data generate``: write scenes [start, start + num) of a built-in dataset to ``out``."""
    from slotlab.data.cache import GENERATORS

    if name not in GENERATORS:
        raise ValueError(f"unknown built-in dataset {name!r}; expected one of {sorted(GENERATORS)}")
    generator, num_objects = GENERATORS[name]
    arrays = generator(num, seed, start)
    return write_cache(arrays, out, name=name, seed=seed, start=start, num_objects=num_objects)


def viz_run(workdir: Path, out: Path, num_scenes: int = 6, checkpoint: str = "best",
            data: str = "test") -> dict[Path, str]:
    """``slotlab viz``: the task's pictures of a few scenes of ``data``, the first at ``out`` (for object discovery
    the attention over iterations goes beside it, ``<out>_attention.png``). Returns {picture: caption}."""
    model, cfg = load_model(workdir, checkpoint)
    task = get_task(cfg)
    if task.draw is None:
        raise ValueError(f"slotlab viz cannot draw a {task.name} run")
    scenes = task_data(data, cfg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return task.draw(model, scenes, out, num_scenes, cfg.train.seed)


def demo(workdir: Path, experiment: str = "tetrominoes_cpu", overrides: list[str] | None = None,
         resume: bool = False) -> Path:
    """``slotlab demo``: train the CPU preset, evaluate on held-out scenes, draw pictures, write report.html."""
    from slotlab.report import write_report

    workdir = Path(workdir)
    if not resume and (workdir / "checkpoints" / "last.safetensors").is_file():
        log.info("%s holds an earlier demo run: continuing it (delete the folder to start over)", workdir)
        resume = True
    train_run(experiment, workdir, overrides or [], resume)
    result = eval_run(workdir, "test")
    (workdir / "test_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("test (best checkpoint by validation): %s", get_task(load_run_config(workdir)).format(result))
    pictures = viz_run(workdir, workdir / "scenes.png")
    from slotlab.compare import compare_with_zoo

    comparison = compare_with_zoo(workdir, load_run_config(workdir).data.name)  # after training: never its init
    return write_report(workdir, pictures, comparison)
