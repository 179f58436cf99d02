"""The demo beside the shipped zoo model: the same held-out scenes, and the zoo never initialises the demo."""

import json

import torch
from safetensors.torch import load_file

from slotlab import runs
from slotlab.checkpoint import load_checkpoint
from slotlab.compare import compare_with_zoo, comparison_scenes
from slotlab.config import DataConfig
from slotlab.zoo import add_entry

TINY = ["train.steps=3", "train.num_threads=1"]


def _demo(workdir, monkeypatch, zoo):
    monkeypatch.setenv("SLOTLAB_ZOO", str(zoo))
    report = runs.demo(workdir, "tiny", TINY)
    return report.read_text(), load_file(str(workdir / "checkpoints" / "last.safetensors"))


def test_demo_trains_from_scratch_and_shows_the_zoo_model(tmp_path, monkeypatch):
    # a "shipped" model: another tiny run, trained longer and with another seed, made a zoo entry named like the data
    runs.train_run("tiny", tmp_path / "zoo_run", ["train.steps=6", "train.seed=5", "train.num_threads=1"], False,
                   progress=False)
    add_entry(tmp_path / "zoo_run", "tetrominoes", root=tmp_path / "zoo")
    empty = tmp_path / "empty_zoo"
    empty.mkdir()
    page_without, weights_without = _demo(tmp_path / "demo_a", monkeypatch, empty)
    page_with, weights_with = _demo(tmp_path / "demo_b", monkeypatch, tmp_path / "zoo")
    # the zoo changes nothing in what the demo trains: same weights, bit for bit, with or without it
    assert weights_with.keys() == weights_without.keys()
    assert all(torch.equal(weights_with[k], weights_without[k]) for k in weights_with)
    assert "Beside the shipped model" in page_with and "Beside the shipped model" not in page_without
    rows = json.loads((tmp_path / "demo_b" / "zoo_comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["this run", "zoo: tetrominoes"]
    zoo_step = load_checkpoint(tmp_path / "zoo" / "tetrominoes" / "model.safetensors")["state"]["step"]
    assert "3 steps on this machine" in rows[0]["cost"] and f"{zoo_step} steps" in rows[1]["cost"]
    assert all(0 <= r["fg_ari"] <= 1 for r in rows)


def test_comparison_scenes_are_held_out_for_both():
    zoo = DataConfig(name="tetrominoes", train_size=64, val_size=8, test_size=8)
    scenes = comparison_scenes(zoo, DataConfig(name="tetrominoes", train_size=32))
    assert scenes is not None and len(scenes) == 8
    assert comparison_scenes(zoo, DataConfig(name="tetrominoes", train_size=100)) is None  # demo saw them
    assert comparison_scenes(zoo, DataConfig(name="multi_dsprites", train_size=32)) is None
    assert comparison_scenes(zoo, DataConfig(name="tetrominoes", train_size=32, seed=1)) is None


def test_no_comparison_for_a_set_prediction_run(tmp_path, monkeypatch):
    # a zoo entry named like the data of a set-prediction run: the comparison (object discovery) is skipped
    runs.train_run("tiny_set", tmp_path / "run", ["train.steps=2", "train.num_threads=1"], False, progress=False)
    add_entry(tmp_path / "run", "sprites_set", root=tmp_path / "zoo")
    monkeypatch.setenv("SLOTLAB_ZOO", str(tmp_path / "zoo"))
    assert compare_with_zoo(tmp_path / "run", "sprites_set") is None
    assert not (tmp_path / "run" / "zoo_comparison.json").exists()
