"""Tasks: one registry entry defines a task for training, evaluation, the CLI and the benchmarks; old configs that
name the task with ``model.kind`` keep loading and resuming."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from slotlab import runs
from slotlab.cli import main
from slotlab.config import ExperimentConfig, apply_overrides
from slotlab.evaluate import evaluate
from slotlab.experiments import EXPERIMENTS, get_experiment
from slotlab.nn.models import SetPredictor, SlotAttentionAutoEncoder
from slotlab.tasks import TASKS, build_model, get_task
from slotlab.train import train

SRC = Path(__file__).resolve().parents[1] / "src" / "slotlab"


def test_every_preset_names_a_registered_task_that_builds_its_model():
    for name, preset in EXPERIMENTS.items():
        cfg = preset()
        task = get_task(cfg)
        assert task.name == cfg.model.task, name
        assert task.select_metric and task.curves, name
    assert isinstance(build_model(get_experiment("tiny").model), SlotAttentionAutoEncoder)
    assert isinstance(build_model(get_experiment("tiny_set").model), SetPredictor)


def test_unknown_task_is_named():
    cfg = apply_overrides(get_experiment("tiny"), ["model.task=audio"])
    with pytest.raises(ValueError, match="unknown model.task 'audio'; expected one of"):
        get_task(cfg)


def test_model_kind_is_an_alias_of_model_task(tmp_path):
    cfg = apply_overrides(get_experiment("tiny"), ["model.kind=set_prediction"])  # --set with the old name
    assert cfg.model.task == "set_prediction"
    old = get_experiment("tiny_set").to_dict()
    old["model"]["kind"] = old["model"].pop("task")  # a config.json written before the rename
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert ExperimentConfig.load(tmp_path / "config.json") == get_experiment("tiny_set")


def test_a_run_written_with_model_kind_loads_evaluates_and_resumes(tmp_path):
    run = tmp_path / "run"
    train(apply_overrides(get_experiment("tiny"), ["train.steps=2"]), run, progress=False)
    config = json.loads((run / "config.json").read_text())
    config["model"]["kind"] = config["model"].pop("task")
    (run / "config.json").write_text(json.dumps(config))
    assert runs.eval_run(run, limit=4)["num_scenes"] == 4
    result = runs.train_run("tiny", run, ["train.steps=4"], resume=True, progress=False)
    assert result["step"] == 4


def _neg_mse(model, split, **kwargs):
    result = evaluate(model, split, **kwargs)
    return {"num_scenes": result["num_scenes"], "neg_mse": -result["mse"]}


def test_a_new_task_is_one_registry_entry(tmp_path, monkeypatch, capsys):
    """A task defined only by its TASKS entry trains, picks its best checkpoint, evaluates and prints its line."""
    toy = replace(TASKS["autoencoder"], name="toy", evaluate=_neg_mse, format=lambda r: f"toy {-r['neg_mse']:.4f}",
                  select_metric="neg_mse", curves={"neg_mse": "-MSE"}, draw=None, scene_specs=False,
                  loss=lambda out, batch: (out["recon"] - batch["image"]).abs().mean())
    monkeypatch.setitem(TASKS, "toy", toy)
    run = tmp_path / "run"
    cfg = apply_overrides(get_experiment("tiny"), ["model.task=toy", "train.steps=2"])
    train(cfg, run, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [set(r) >= {"neg_mse"} for r in rows if r["kind"] == "val"] == [True]
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert main(["eval", "--workdir", str(run), "--limit", "4"]) == 0
    assert re.search(r"^toy \d\.\d{4}$", capsys.readouterr().out, re.M)
    assert main(["eval", "--workdir", str(run), "--data", f"cache:{tmp_path}"]) == 2  # no scene specs
    assert "uses 'test', 'val' or 'train'" in capsys.readouterr().err
    assert main(["viz", "--workdir", str(run), "--out", str(tmp_path / "v.png")]) == 2  # no draw
    assert "cannot draw a toy run" in capsys.readouterr().err


def test_synthetic_batch_marks_what_the_step_benchmarks_cover():
    from slotlab.bench import train_step

    cfg = get_experiment("tiny").model
    batch = get_task(cfg).synthetic_batch(cfg, 3, "cpu")
    assert batch["image"].shape == (3, 3, cfg.resolution, cfg.resolution)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert train_step.parse_case("tiny:2", 8)[2] == 2
    with pytest.raises(ValueError, match="set_prediction preset, which this benchmark does not cover"):
        train_step.parse_case("tiny_set", 8)
    with pytest.raises(ValueError, match="video preset, which this benchmark does not cover"):
        train_step.parse_case("tiny_video", 8)
    # a video preset's synthetic batch drives the profiled step (benchmarks/profile_train.py)
    video_cfg = get_experiment("tiny_video")
    step = train_step.synthetic_step(video_cfg, 2, fast=True, precision="fp32")
    assert torch.isfinite(step())
    clips = get_task(video_cfg.model).synthetic_batch(video_cfg.model, 2, "cpu")
    assert clips["video"].shape[:3] == (2, 6, 3) and clips["centers"][:, 0, -1].eq(0).all()


def test_set_task_loss_is_zero_on_its_targets():
    task = TASKS["set_prediction"]
    split = task.build_splits(get_experiment("tiny_set").data)["train"]
    batch = task.batch(split, torch.arange(4))
    from slotlab.losses import pad_targets

    pred = pad_targets(batch["target"], 6)
    assert float(task.loss({"pred": pred}, batch)) == pytest.approx(0.0, abs=1e-6)
    assert float(task.loss({"pred": pred.flip(-1)}, batch)) > 0.01


def test_only_tasks_py_branches_on_the_task():
    """No module but tasks.py tests the task's name or a task-specific result key."""
    pattern = re.compile(r"\b(model|cfg|m)\.(task|kind)\s*[!=]="  # cfg.model.task == "..."
                         r"|(task|\))\.name\s*[!=]="  # task.name == "...", get_task(cfg).name == "..."
                         r"|\btask\s*[!=]=\s*[\"']"  # task == "discovery"
                         r"|[\"'](ap_inf|fg_ari)[\"']\s+in\s")  # "ap_inf" in result
    found = [f"{path.relative_to(SRC)}:{n}" for path in SRC.rglob("*.py") if path.name != "tasks.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
