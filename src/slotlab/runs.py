"""What the CLI commands do, as plain functions over a run directory (usable from Python and scripts too)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from slotlab.config import ExperimentConfig, apply_overrides
from slotlab.data import SceneSet, write_cache
from slotlab.experiments import get_experiment
from slotlab.rundir import RunDir, atomic_write, check_output, output_lock, write_error
from slotlab.tasks import get_task

log = logging.getLogger(__name__)


def train_run(experiment: str, workdir: Path, overrides: list[str], resume: bool, progress: bool = True,
              data: str | None = None, val_data: str | None = None, allow_change: tuple[str, ...] = ()) -> dict:
    """``slotlab train``: a new run from a preset (+ overrides), or ``resume`` the run in ``workdir``.

    ``data`` (``--data KIND:PATH`` or ``cache:DIR``) replaces the built-in training split; validation is
    ``val_data`` or the held-out scenes after the training range (:func:`slotlab.data.specs.training_specs`).
    Nothing is written here: :func:`slotlab.train.train` checks a resume against its checkpoint first
    (``allow_change``: the meaning-changing changes accepted, see :mod:`slotlab.resume`).
    """
    from slotlab.config import validate_train_config
    from slotlab.train import set_threads, train

    run = RunDir(workdir)
    if resume:
        cfg = run.load_config()
        if experiment and cfg.name != experiment:
            raise ValueError(f"--resume: {workdir} holds experiment {cfg.name!r}, not {experiment!r}")
    else:
        cfg = get_experiment(experiment)
    apply_overrides(cfg, overrides)
    validate_train_config(cfg.train)
    set_threads(cfg.train.num_threads)
    record = data_record(run, data, val_data, resume)
    splits = data_splits(cfg, record)
    return train(cfg, workdir, resume=resume, progress=progress, splits=splits, data_record=record,
                 allow_change=tuple(allow_change))


def data_record(run: RunDir, data: str | None, val_data: str | None, resume: bool) -> dict:
    """``{"data", "val_data"}`` of this run: the given specs, or on ``--resume`` without ``--data`` the ones the
    checkpoint was trained on (data.json for checkpoints that predate the record; a data.json that disagrees with
    the checkpoint is an error, never a silent switch of data)."""
    if data is None and val_data is not None:
        raise ValueError("--val-data needs --data (the built-in data has its own validation split)")
    if not resume or data is not None:
        return {"data": data, "val_data": val_data}
    from slotlab.checkpoint import read_metadata

    last = run.checkpoint("last")
    saved = read_metadata(last)["state"].get("data") if last.is_file() else None
    on_disk = run.read_data_record()
    if saved is None:
        return on_disk or {"data": None, "val_data": None}
    if on_disk is not None and on_disk != saved:
        raise ValueError(f"{run.data_path} says {on_disk} but {last} was trained on {saved}; the file is stale. "
                         f"Delete it to resume on the checkpoint's data, or pass --data explicitly")
    return saved


def data_splits(cfg: ExperimentConfig, record: dict) -> dict[str, SceneSet] | None:
    """Train and val SceneSets of the ``--data`` / ``--val-data`` specs in ``record`` (None: the preset's data)."""
    from slotlab.data.specs import load_scenes, training_specs

    data, val_data = record["data"], record["val_data"]
    task = get_task(cfg)
    if task.data_spec is not None:  # the spec names the dataset in the config (features task: coco:DIR, voc:DIR)
        if val_data is not None:
            raise ValueError(f"--val-data: a {task.name} run takes its validation images from its dataset "
                             "(docs/real_world.md)")
        if data is not None:
            task.data_spec(cfg.data, data)
        return None
    if data is None:
        return None
    if not get_task(cfg).scene_specs:
        raise ValueError(f"--data: a {cfg.model.task} run reads the data its config names (data.name / data.path)")
    if data.startswith("folder:"):  # a folder of images (slotlab.data.folder, docs/your_data.md)
        from slotlab.data.folder import folder_training_splits

        return folder_training_splits(data, cfg.model.resolution, cfg.data.resize, val_data)
    if cfg.train.report_test:
        raise ValueError("train.report_test needs the built-in data; with --data evaluate the test range after "
                         "training (slotlab eval --data KIND:PATH@test)")
    train_spec, val_spec = training_specs(data, val_data, cfg.data.val_size)
    log.info("training on %s, validating on %s", train_spec, val_spec)
    return {"train": load_scenes(train_spec), "val": load_scenes(val_spec)}


def load_run_config(workdir: Path) -> ExperimentConfig:
    return RunDir(workdir).load_config()


def load_model(workdir: Path, checkpoint: str = "best") -> tuple[torch.nn.Module, ExperimentConfig]:
    """The model of a run directory or zoo entry directory, in eval mode, with the weights that
    :func:`slotlab.zoo.weights_file` picks (``checkpoints/<checkpoint>.safetensors``, else best, else last; a zoo
    entry's ``model.safetensors``), checked against its config (:func:`slotlab.api.build_checked`)."""
    from slotlab.api import build_checked
    from slotlab.zoo import weights_file

    cfg = RunDir(workdir).load_config()
    return build_checked(cfg, weights_file(workdir, checkpoint)), cfg


def output_file(path: str | Path, default_name: str, what: str) -> Path:
    """``path``, or ``path/default_name`` when ``path`` is a directory; its folder is created. Checked before the
    work that produces it, so that a bad path fails fast."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"{what} {path}: {path.parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err) from err
    return path


def check_counts(**counts: int | None) -> None:
    """Each given count (``--batch-size``, ``--limit``, ``--num-slots``, ``--num-iters``) must be >= 1."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


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

    check_counts(batch_size=batch_size, limit=limit, num_slots=num_slots, num_iters=num_iters)
    model, cfg = load_model(workdir, checkpoint)
    model.to(resolve_device(device, "eval --device"))
    task = get_task(cfg)
    scenes = task_data(data, cfg)
    result = task.evaluate(model, scenes, batch_size=batch_size, num_slots=num_slots, num_iters=num_iters,
                      seed=cfg.train.seed, limit=limit)
    return {**result, "data": data, "checkpoint": checkpoint}


def convert_data(spec: str, out: Path, start: int | None = None, stop: int | None = None,
                 progress: bool = True, force: bool = False) -> Path:
    """``slotlab data convert KIND:PATH --out DIR``: records [start, stop) (or the spec's range) to a cache dir.
    An existing ``out`` is replaced only if it is a slotlab cache and ``force`` (:func:`slotlab.rundir.check_output`).
    """
    from slotlab.data.convert import convert_tfrecord
    from slotlab.data.specs import parse_data_spec

    parsed = parse_data_spec(spec)
    if parsed.kind in ("cache", "clevr"):
        raise ValueError(f"data convert {spec!r}: expected a TFRecord spec KIND:FILE, not {parsed.kind}:")
    start = parsed.start if start is None else start
    stop = parsed.stop if stop is None else stop
    with output_lock(out):
        check_output(out, "cache", force, sources=(parsed.path,))
        return convert_tfrecord(parsed.kind, parsed.path, out, start, stop, progress=progress)


def generate_data(name: str, out: Path, num: int, seed: int, start: int = 0, force: bool = False) -> Path:
    """``slotlab data generate``: write scenes [start, start + num) of a built-in dataset to ``out`` (replacing a
    slotlab cache there only with ``force``)."""
    from slotlab.data.cache import GENERATORS

    if name not in GENERATORS:
        raise ValueError(f"unknown built-in dataset {name!r}; expected one of {sorted(GENERATORS)}")
    generator, num_objects = GENERATORS[name]
    with output_lock(out):
        check_output(out, "cache", force)
        arrays = generator(num, seed, start)
        return write_cache(arrays, out, name=name, seed=seed, start=start, num_objects=num_objects)


def viz_run(workdir: Path, out: Path, num_scenes: int = 6, checkpoint: str = "best",
            data: str = "test") -> dict[Path, str]:
    """``slotlab viz``: the task's pictures of a few scenes of ``data``, the first at ``out`` (a .png file, or a
    folder: then ``scenes.png`` in it; for object discovery the attention over iterations goes beside it,
    ``<out>_attention.png``). Returns {picture: caption}."""
    check_counts(num_scenes=num_scenes)
    out = output_file(out, "scenes.png", "viz --out")
    model, cfg = load_model(workdir, checkpoint)
    task = get_task(cfg)
    if task.draw is None:
        raise ValueError(f"slotlab viz cannot draw a {task.name} run")
    scenes = task_data(data, cfg)
    return task.draw(model, scenes, out, num_scenes, cfg.train.seed)


def demo(workdir: Path, experiment: str = "tetrominoes_cpu", overrides: list[str] | None = None,
         resume: bool = False) -> Path:
    """``slotlab demo``: train the CPU preset, evaluate on held-out scenes, draw pictures, write report.html; all
    under the run's lock."""
    from slotlab.report import write_report

    run = RunDir(workdir)
    with run.lock():
        if not resume and run.has_checkpoint():
            log.info("%s holds an earlier demo run: continuing it (delete the folder to start over)", workdir)
            resume = True
        train_run(experiment, run.path, overrides or [], resume)
        result = eval_run(run.path, "test")
        atomic_write(run.path / "test_metrics.json", json.dumps(result, indent=2) + "\n")
        log.info("test (best checkpoint by validation): %s", get_task(run.load_config()).format(result))
        pictures = viz_run(run.path, run.path / "scenes.png")
        from slotlab.compare import compare_with_zoo

        comparison = compare_with_zoo(run.path, run.load_config().data.name)  # after training: never its init
        return write_report(run.path, pictures, comparison)
