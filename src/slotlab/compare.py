"""The demo's model beside the shipped zoo model of the same dataset, on the same held-out scenes.

``slotlab demo`` trains from scratch for minutes (the zoo's weights never initialise it); the zoo model
(``slotlab.zoo``) was trained for hours. Both are evaluated on the zoo model's test scenes: generated from the
same seed *after* both training ranges (the zoo trains on scenes [0, train_size) and the demo on a prefix of
them), so neither model has seen them. Each is labelled with what it cost.
"""

from __future__ import annotations

import json
from pathlib import Path

from slotlab.checkpoint import load_checkpoint
from slotlab.data import SceneSet
from slotlab.data.cache import GENERATORS
from slotlab.runs import load_model
from slotlab.tasks import get_task
from slotlab.viz import read_metrics, save_scene_figure
from slotlab.zoo import WEIGHTS, entry_dir


def comparison_scenes(zoo_data, demo_data) -> SceneSet | None:
    """The zoo model's test scenes (B, 3, H, W) of its built-in dataset, or None when the demo trained on another
    dataset or generator seed, or on any of those scenes."""
    if zoo_data.name != demo_data.name or zoo_data.seed != demo_data.seed or zoo_data.name not in GENERATORS:
        return None
    start, n = zoo_data.train_size + zoo_data.val_size, zoo_data.test_size
    if start < demo_data.train_size:
        return None
    generate, num_objects = GENERATORS[zoo_data.name][:2]
    return SceneSet.from_arrays(generate(n, zoo_data.seed, start), num_objects, f"{zoo_data.name}/zoo-test", 0, n)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} hours" if seconds >= 5400 else f"{seconds / 60:.0f} minutes"


def _cost(where: Path) -> str:
    """What a model cost to train: a zoo entry's card facts (``metrics.json``: steps, hours, machine) or the step
    and time stored with its weights; a run directory's last metrics row."""
    facts = where / "metrics.json"
    training = json.loads(facts.read_text()).get("training", {}) if facts.is_file() else {}
    if training:
        return f"{_duration(training['hours'] * 3600)}, {training['steps']:,} steps on {training['machine']}"
    if (where / WEIGHTS).is_file():
        state = load_checkpoint(where / WEIGHTS)["state"]
        return f"{_duration(state['train_seconds'])}, {state['step']:,} steps"
    rows = [r for rows in read_metrics(where) for r in rows]
    last = max(rows, key=lambda r: r["step"])
    return f"{_duration(last['train_seconds'])}, {last['step']:,} steps on this machine"


def compare_with_zoo(workdir: Path, name: str, num_scenes: int = 6) -> dict | None:
    """Evaluate the run in ``workdir`` and the zoo model ``name`` on the same scenes, draw both, and write
    ``workdir/zoo_comparison.json``. Returns {"rows": [{"model", "cost", metrics...}], "pictures": {png: caption}}
    or None when there is no such zoo model, no common held-out scenes, or a task without the comparison
    (``Task.zoo_comparison``: object discovery; its scenes and pictures) or another task than the zoo model's."""
    workdir = Path(workdir)
    try:
        entry = entry_dir(name)
    except KeyError:
        return None
    demo_model, demo_cfg = load_model(workdir, "best")
    zoo_model, zoo_cfg = load_model(entry)
    task = get_task(demo_cfg)
    if not task.zoo_comparison or get_task(zoo_cfg) is not task:
        return None
    scenes = comparison_scenes(zoo_cfg.data, demo_cfg.data)
    if scenes is None or zoo_cfg.model.resolution != demo_cfg.model.resolution:
        return None
    rows, pictures = [], {}
    for label, model, cfg, where in [("this run", demo_model, demo_cfg, workdir),
                                     (f"zoo: {name}", zoo_model, zoo_cfg, entry)]:
        result = task.evaluate(model, scenes, seed=cfg.train.seed)
        rows.append({"model": label, "cost": _cost(where), **result})
        picture = workdir / f"compare_{'run' if where == workdir else 'zoo'}.png"
        save_scene_figure(model, scenes, picture, num_scenes, seed=cfg.train.seed)
        pictures[picture] = f"{label} ({rows[-1]['cost']}): {task.format(result)}"
    (workdir / "zoo_comparison.json").write_text(json.dumps({"scenes": scenes.name, "rows": rows}, indent=1) + "\n")
    return {"rows": rows, "pictures": pictures, "scenes": scenes.name, "task": task}
