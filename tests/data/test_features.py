import json

import numpy as np
import pytest
import torch
from real_layouts import write_coco

from slotlab.cli import main
from slotlab.config import apply_overrides
from slotlab.data.coco import CocoSource
from slotlab.data.features import build_cache, feature_split
from slotlab.experiments import get_experiment
from slotlab.nn.backbone import FrozenBackbone
from slotlab.train import train

TINY = ["model.backbone=vit_tiny_patch16", "model.backbone_weights=random", "model.resolution=32",
        "model.slot_dim=16", "model.mlp_hidden_dim=16", "model.decoder_channels=16", "model.decoder_layers=2",
        "data.train_size=6", "data.val_size=2", "data.test_size=3", "data.mask_size=40", "train.batch_size=2",
        "train.steps=3", "train.warmup_steps=1", "train.log_every=1", "train.eval_every=3",
        "train.checkpoint_every=3", "train.num_threads=1"]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_coco(root, "train", 8)
    write_coco(root, "val", 3, seed=1)
    return root


def test_cache_fp32_equals_on_the_fly_fp16_close_and_reused(coco, tmp_path):
    src = CocoSource(coco, "train", 32)
    backbone = FrozenBackbone("vit_tiny_patch16", "random", 32)
    live = feature_split(src, backbone, "none", tmp_path)
    fp32 = feature_split(src, backbone, "fp32", tmp_path)
    fp16 = feature_split(src, backbone, "fp16", tmp_path)
    index = torch.tensor([5, 1, 5, 7])
    assert torch.equal(fp32.features(index), live.features(index))
    assert fp16.cached.dtype == np.float16 and fp32.cached.dtype == np.float32
    torch.testing.assert_close(fp16.features(index), live.features(index), rtol=1e-3, atol=1e-3)
    path = build_cache(src, backbone, tmp_path, "fp32")
    stamp = (path / "features.npy").stat().st_mtime_ns
    assert build_cache(src, backbone, tmp_path, "fp32") == path and (path / "features.npy").stat().st_mtime_ns == stamp
    other = FrozenBackbone("vit_tiny_patch16", "random", 32, block=3)
    assert build_cache(src, other, tmp_path, "fp32") != path  # another block: another cache
    assert json.loads((path / "meta.json").read_text())["shape"] == [8, 4, 192]


def _losses(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def test_training_on_cached_features_matches_on_the_fly(coco, tmp_path):
    """fp32 cache: the same losses as running the backbone every step; fp16 cache: within 1e-3 relative."""
    losses = {}
    for mode in ("none", "fp32", "fp16"):
        cfg = apply_overrides(get_experiment("dinosaur_coco"), TINY + [f"data.feature_cache={mode}",
                              f"data.path={coco}", f"data.cache_dir={tmp_path / 'cache'}"])
        train(cfg, tmp_path / mode, progress=False)
        losses[mode] = _losses(tmp_path / mode)
    assert len(losses["none"]) == 3
    assert losses["fp32"] == losses["none"]
    np.testing.assert_allclose(losses["fp16"], losses["none"], rtol=1e-3)


def test_cli_train_and_eval_end_to_end(coco, tmp_path, capsys):
    work = tmp_path / "run"
    args = ["train", "--experiment", "dinosaur_coco", "--workdir", str(work), "--data", f"coco:{coco}",
            "--no-progress", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    assert (work / "checkpoints" / "best.safetensors").is_file()
    assert json.loads((work / "config.json").read_text())["data"]["path"] == str(coco)
    assert main(["eval", "--workdir", str(work), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_scenes"] == 3
    for key in ("fg_ari", "mbo", "mbo_c", "mse"):
        assert 0 <= metrics[key] <= 1 if key != "mse" else metrics[key] > 0, key
    capsys.readouterr()
    args = [a if a != "model.backbone_weights=random" else "model.backbone_weights=" for a in args]
    args[args.index("--workdir") + 1] = str(tmp_path / "x")
    assert main(args) == 2  # no weights given: a clear error, not a download
    assert "backbone_weights is not set" in capsys.readouterr().err


def test_cli_features_task_on_an_image_folder(tmp_path, capsys):
    """--data folder:DIR (your own images): trains; with label masks beside the images the metrics are measured."""
    from PIL import Image

    root = tmp_path / "photos"
    (root / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(root / f"p{i}.png")
        labels = np.zeros((36, 44), np.uint8)
        labels[4:20, 6:30], labels[22:34, 20:40] = 1, 2
        Image.fromarray(labels).save(root / "masks" / f"p{i}.png")
    work = tmp_path / "run"
    args = ["train", "--experiment", "dinosaur_coco", "--workdir", str(work), "--data", f"folder:{root}",
            "--no-progress", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    assert main(["eval", "--workdir", str(work), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_scenes"] == 1  # no test/ sub-folder: the held-out validation image
    assert 0 <= metrics["mbo"] <= 1 and metrics["mse"] > 0
    import shutil

    shutil.rmtree(root / "masks")  # no masks: trains on the images; only the feature MSE can be measured
    args[args.index("--workdir") + 1] = str(tmp_path / "run2")
    assert main(args) == 0
    assert main(["eval", "--workdir", str(tmp_path / "run2"), "--json", str(tmp_path / "m2.json")]) == 0
    metrics = json.loads((tmp_path / "m2.json").read_text())
    assert np.isnan(metrics["fg_ari"]) and np.isnan(metrics["mbo"]) and metrics["mse"] > 0


def test_feature_evaluation_does_not_depend_on_the_batch_size(coco, tmp_path):
    from slotlab.evaluate_features import evaluate_features
    from slotlab.nn.dinosaur import Dinosaur

    cfg = apply_overrides(get_experiment("dinosaur_coco"), TINY)
    src = CocoSource(coco, "train", 32)
    split = feature_split(src, FrozenBackbone("vit_tiny_patch16", "random", 32), "fp32", tmp_path)
    torch.manual_seed(0)
    model = Dinosaur(cfg.model, 192, 4)
    one = evaluate_features(model, split, batch_size=1, seed=3)
    five = evaluate_features(model, split, batch_size=5, seed=3)
    assert one == five
    assert evaluate_features(model, split, batch_size=5, seed=4)["mse"] != five["mse"]  # the seed matters
