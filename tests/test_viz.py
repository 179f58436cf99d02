"""Pictures: the figures have one row per scene (or iteration) and one column per slot, from the model's outputs."""

import json

import matplotlib.image
import pytest
import torch

from slotlab.experiments import get_experiment
from slotlab.set_layout import get_layout
from slotlab.tasks import get_task
from slotlab.viz import (
    PALETTE,
    _rgb,
    _segmentation,
    describe_object,
    read_metrics,
    save_attention_figure,
    save_curves,
    save_scene_figure,
    save_set_figure,
)


def model_and_scenes(name: str):
    cfg = get_experiment(name)
    task = get_task(cfg)
    torch.manual_seed(0)
    return task.build_model(cfg), task.build_splits(cfg.data)["test"], cfg


def test_pixels_and_segmentation_colours():
    image = torch.tensor([-1.0, 0.0, 1.0]).reshape(3, 1, 1).expand(3, 2, 2)
    assert _rgb(image)[0, 0].tolist() == [0.0, 0.5, 1.0]
    masks = torch.zeros(3, 2, 2)
    masks[2, 0, 0] = masks[1, 1, 1] = 1.0  # pixel (0, 0) is component 2, (1, 1) component 1, the rest 0
    seg = _segmentation(masks)
    assert torch.equal(seg[0, 0], PALETTE[2]) and torch.equal(seg[1, 1], PALETTE[1])
    assert torch.equal(seg[0, 1], PALETTE[0])


def test_scene_and_attention_figures_have_a_panel_per_slot(tmp_path):
    model, scenes, cfg = model_and_scenes("tiny")
    K, T = cfg.model.num_slots, cfg.model.num_iters
    save_scene_figure(model, scenes, tmp_path / "s.png", num_scenes=3)
    height, width = matplotlib.image.imread(tmp_path / "s.png").shape[:2]
    assert (width, height) == (round(140 * (K + 4)), round(140 * 3 + 30))  # K + 4 columns, 3 rows, at 100 dpi
    save_attention_figure(model, scenes, tmp_path / "a.png")
    height, width = matplotlib.image.imread(tmp_path / "a.png").shape[:2]
    assert (width, height) == (round(150 * (K + 1)), round(150 * T + 30))  # a row per iteration


def test_set_figure_lists_true_objects_beside_their_predictions(tmp_path):
    layout = get_layout("sprites")
    row = torch.zeros(layout.width)
    row[0:2] = torch.tensor([0.25, 0.75])
    row[3] = row[6] = row[11] = row[13] = 1.0  # large, heart, blue, real
    assert describe_object(row, layout) == "large heart blue (0.25, 0.75)"
    model, scenes, _ = model_and_scenes("tiny_set")
    save_set_figure(model, scenes, tmp_path / "set.png", num_scenes=2)
    assert matplotlib.image.imread(tmp_path / "set.png").shape[:2] == (round(110 * 2.2 * 2), 990)


def _write_metrics(workdir, rows):
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curves_plot_the_tasks_metrics(tmp_path):
    get_experiment("tiny_set").save(tmp_path / "config.json")
    rows = [{"kind": "train", "step": 1, "train_seconds": 6.0, "loss": 0.5},
            {"kind": "val", "step": 2, "train_seconds": 12.0, "ap_inf": 0.1, "ap_1": 0.05, "ap_0.5": 0.0,
             "ap_0.25": 0.0, "ap_0.125": 0.0, "ap_mean": 0.03, "loss": 0.4},
            {"kind": "test", "step": 2, "train_seconds": 12.0}]
    _write_metrics(tmp_path, rows)
    train_rows, val_rows = read_metrics(tmp_path)
    assert [r["step"] for r in train_rows] == [1] and [r["step"] for r in val_rows] == [2]
    save_curves(tmp_path, tmp_path / "c.png")  # the set-prediction task's AP curves; no FG-ARI in these rows
    assert matplotlib.image.imread(tmp_path / "c.png").shape[:2] == (350, 1000)
    with pytest.raises(KeyError, match="fg_ari"):
        save_curves(tmp_path, tmp_path / "c.png", {"fg_ari": "FG-ARI"})
