"""Your own images end to end: train on a folder, evaluate with masks, segment, export; segment agrees with eval."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import slotlab
from slotlab import metrics
from slotlab.cli import main
from slotlab.data import build_splits
from slotlab.data.specs import load_scenes
from slotlab.noise import seeded_forward
from slotlab.runs import eval_run, load_model
from slotlab.segment import plan

_REAL = "shared/data/real/tetrominoes_mini.tfrecords"
REAL_TETROMINOES = next((p for p in (Path(__file__).resolve().parents[i] / _REAL for i in (1, 2)) if p.is_file()), None)


def _scene_folder(root, n=12, seed=3):
    """Tetrominoes scenes written as PNG and JPEG of mixed sizes and modes (L, P, RGBA, 16-bit), with label-map
    masks of each image's size; returns {relative path: (W, H)}."""
    from slotlab.data import generate_tetrominoes

    arrays = generate_tetrominoes(n, seed)
    sizes = {}
    for i in range(n):
        rgb, labels = arrays["image"][i], arrays["labels"][i]
        kind = ["rgb", "jpeg", "L", "P", "RGBA", "I16"][i % 6]
        size = [(35, 35), (48, 40), (35, 50), (70, 70), (30, 35), (35, 35)][i % 6]  # (W, H)
        image = Image.fromarray(rgb).resize(size, Image.NEAREST)
        mask = Image.fromarray(labels).resize(size, Image.NEAREST)
        sub = "part_a" if i < n // 2 else "part_b"
        name = f"{sub}/scene_{i:03d}." + ("jpg" if kind == "jpeg" else "png")
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "L":
            image = image.convert("L")
        elif kind == "P":
            image = image.convert("P", palette=Image.ADAPTIVE, colors=16)
        elif kind == "RGBA":
            image = image.convert("RGBA")
        elif kind == "I16":
            image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
        image.save(path, quality=95) if kind == "jpeg" else image.save(path)
        (root / "masks" / sub).mkdir(parents=True, exist_ok=True)
        mask.save(root / "masks" / sub / f"scene_{i:03d}.png")
        sizes[name] = size
    return sizes


def test_folder_train_eval_segment_export(tmp_path, capsys):
    data = tmp_path / "images"
    sizes = _scene_folder(data)
    modes = {Image.open(data / name).mode for name in sizes}
    assert {"L", "P", "RGBA", "RGB"} <= modes and any(m.startswith("I") for m in modes)
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--data", f"folder:{data}",
                 "--no-progress"]) == 0
    assert main(["eval", "--workdir", str(run), "--data", f"folder:{data}", "--json", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["num_scenes"] == len(sizes)
    assert 0 <= result["mbo"] <= 1 and np.isfinite(result["fg_ari"]) and np.isfinite(result["ari"])

    assert main(["viz", "--workdir", str(run), "--data", f"folder:{data}@val", "--out", str(run / "scenes.png")]) == 0
    assert main(["report", "--workdir", str(run)]) == 0
    assert "scenes" in (run / "report.html").read_text()

    out = tmp_path / "seg"
    capsys.readouterr()
    assert main(["segment", "--workdir", str(run), str(data), "--out", str(out), "--no-progress"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert len(index["outputs"]) == len(sizes) and index["skipped"] == []
    K, D = 4, 16
    for name, size in sizes.items():
        stem = name.rsplit(".", 1)[0]
        label_map = Image.open(out / f"{stem}.png")
        assert label_map.mode == "L" and label_map.size == size
        values = np.unique(np.asarray(label_map))
        assert set(values.tolist()) <= set(range(K)) | {255}
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == size
        npz = np.load(out / f"{stem}.npz")
        assert npz["slots"].shape == (K, D) and npz["masks"].shape == (K, 35, 35) and npz["attn"].shape == (K, 35 * 35)
        assert np.allclose(npz["masks"].sum(0), 1, atol=1e-5)
    assert "<img" in (out / "index.html").read_text()

    export = tmp_path / "slots.npz"
    assert main(["export", "--workdir", str(run), "--data", f"folder:{data}", "--out", str(export),
                 "--no-progress"]) == 0
    saved = np.load(export)
    assert saved["slots"].shape == (len(sizes), K, D) and saved["masks"].shape == (len(sizes), K, 35, 35)
    assert saved["true_labels"].shape == (len(sizes), 35, 35) and list(saved["files"]) == sorted(sizes)
    assert json.loads(str(saved["metadata"]))["num_scenes"] == len(sizes)


def test_segment_matches_eval_on_generated_scenes(tmp_path):
    """The label maps of PNG scenes are the argmax of evaluation's masks, so FG-ARI agrees (here exactly)."""
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress",
                 "--set", "train.steps=6"]) == 0
    model, cfg = load_model(run)
    scenes = build_splits(cfg.data)["test"]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(len(scenes)):
        Image.fromarray(scenes.images[i].permute(1, 2, 0).numpy()).save(folder / f"scene_{i:03d}.png")
    out = tmp_path / "seg"
    assert main(["segment", "--workdir", str(run), str(folder), "--out", str(out), "--no-progress",
                 "--batch-size", "5"]) == 0
    labels = torch.from_numpy(np.stack([np.asarray(Image.open(out / f"scene_{i:03d}.png"))
                                        for i in range(len(scenes))])).long()  # (B, H, W)
    batch = scenes.batch(slice(0, len(scenes)))
    with torch.no_grad():
        expected = seeded_forward(model, batch["image"], cfg.train.seed)["masks"][:, :, 0].argmax(1)
    assert (labels == expected).float().mean() > 0.999
    predicted = torch.nn.functional.one_hot(labels, cfg.model.num_slots).permute(0, 3, 1, 2).float()
    fg_ari = float(metrics.fg_ari(batch["masks"], predicted).nanmean())
    assert abs(fg_ari - eval_run(run, "test", batch_size=7)["fg_ari"]) < 0.01

    if REAL_TETROMINOES is not None:  # DeepMind's own file: segment on its scenes as PNGs == eval on the file
        spec = f"tetrominoes:{REAL_TETROMINOES}"
        real = load_scenes(spec)
        (tmp_path / "real").mkdir()
        for i in range(len(real)):
            Image.fromarray(real.images[i].permute(1, 2, 0).numpy()).save(tmp_path / "real" / f"scene_{i:03d}.png")
        assert main(["segment", "--workdir", str(run), str(tmp_path / "real"), "--out", str(tmp_path / "real_out"),
                     "--no-progress"]) == 0
        labels_real = torch.from_numpy(np.stack([np.asarray(Image.open(tmp_path / "real_out" / f"scene_{i:03d}.png"))
                                                 for i in range(len(real))])).long()
        one_hot = torch.nn.functional.one_hot(labels_real, cfg.model.num_slots).permute(0, 3, 1, 2).float()
        seg_fg_ari = float(metrics.fg_ari(real.batch(slice(0, len(real)))["masks"], one_hot).nanmean())
        assert abs(seg_fg_ari - eval_run(run, spec)["fg_ari"]) < 0.01

    api = slotlab.load(run).segment(batch["image"].add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy())
    assert (api["labels"].long() == expected).float().mean() > 0.999  # the Python API gives the same
    single = slotlab.load(run).segment([Image.open(folder / "scene_003.png")])
    assert (single["labels"][0].long() == expected[3]).float().mean() > 0.999  # batch of one: same result


def test_segment_refuses_conflicts_and_skips_unreadable(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--experiment", "tiny", "--workdir", str(run), "--no-progress",
                 "--set", "train.steps=2"]) == 0
    data = tmp_path / "in"
    data.mkdir()
    Image.fromarray(np.zeros((35, 35, 3), np.uint8)).save(data / "a.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(data / "a.jpg")
    with pytest.raises(ValueError, match="would both write"):
        plan([data], tmp_path / "out")
    (data / "a.jpg").unlink()
    with pytest.raises(ValueError, match="inside the input directory"):
        plan([data], data / "out")
    with pytest.raises(ValueError, match="inside the input directory"):
        plan([data], data)
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (data / "zero.jpg").write_bytes(b"")
    (data / "notes.txt").write_text("not an image")
    capsys.readouterr()
    assert main(["segment", "--workdir", str(run), str(data), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "zero.jpg" in err and "notes.txt" in err
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [o["label_map"] for o in index["outputs"]] == ["a.png"] and len(index["skipped"]) == 3
    assert main(["segment", "--workdir", str(run), str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    mine = tmp_path / "mine"  # a folder of the user's own files, one named like an output
    mine.mkdir()
    (mine / "a.png").write_bytes(b"the user's file")
    capsys.readouterr()
    assert main(["segment", "--workdir", str(run), str(data / "a.png"), "--out", str(mine), "--no-progress"]) == 2
    assert "did not write" in capsys.readouterr().err and (mine / "a.png").read_bytes() == b"the user's file"
    assert main(["segment", "--workdir", str(run), str(data / "a.png"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0  # a previous segment output is replaced
    (mine / "index.json").write_text("{}")  # an index.json that slotlab segment did not write
    assert main(["segment", "--workdir", str(run), str(data / "a.png"), "--out", str(mine), "--no-progress"]) == 2


def test_background_layer_is_label_zero():
    from slotlab.api import LoadedModel
    from slotlab.experiments import get_experiment
    from slotlab.tasks import build_model

    cfg = get_experiment("tiny")
    cfg.model.background, cfg.model.mask_source = "uniform", "decoder"
    torch.manual_seed(0)
    model = LoadedModel(build_model(cfg.model).eval(), cfg, "tiny+background")
    images = np.random.default_rng(0).integers(0, 255, (2, 35, 35, 3), dtype=np.uint8)
    out = model.segment(images)
    assert out["model_masks"].shape == (2, 5, 35, 35) and out["masks"].shape == (2, 5, 35, 35)
    with torch.no_grad():
        raw = seeded_forward(model.model, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1,
                             cfg.train.seed)["masks"][:, :, 0]  # (B, K + 1, H, W), background last
    assert torch.allclose(out["model_masks"][:, 0], raw[:, -1], atol=1e-6)
    top2 = raw.topk(2, dim=1).values  # untrained: exact ties, broken in favour of the background; compare elsewhere
    clear = top2[:, 0] > top2[:, 1] + 1e-6
    assert clear.float().mean() > 0.5
    assert (out["labels"].long() == (raw.argmax(1) + 1) % 5)[clear].all()  # background -> 0, slot k -> k + 1


def test_segment_refuses_a_model_that_is_not_object_discovery(tmp_path):
    from slotlab.runs import train_run

    train_run("tiny_set", tmp_path / "set", ["train.steps=1", "train.num_threads=1"], False, progress=False)
    model = slotlab.load(tmp_path / "set")
    with pytest.raises(ValueError, match=r"object-discovery model of images.*SetPredictor.*'set_prediction'"):
        model.segment(np.zeros((1, 64, 64, 3), np.uint8))
