import json

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data.clevr import CLEVR_PROPERTIES, clevr_target, read_clevr
from slotlab.data.specs import DataSpec, load_scenes, parse_data_spec

OBJECT = {"3d_coords": [-3.0, 0.0, 3.0], "size": "large", "material": "metal", "shape": "cylinder", "color": "cyan",
          "rotation": 12.0, "pixel_coords": [1, 2, 3.0]}


def fake_clevr(root, split: str, objects_per_scene: list[int], seed: int = 0) -> list[np.ndarray]:
    """A CLEVR_v1.0 folder: 480x320 RGBA PNGs and the scenes JSON, listed out of order (sorted by image_index)."""
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True)
    (root / "scenes").mkdir(exist_ok=True)
    scenes, images = [], []
    for i, n in enumerate(objects_per_scene):
        rgb = rng.integers(0, 256, (320, 480, 3), dtype=np.uint8)
        name = f"CLEVR_{split}_{i:06d}.png"
        Image.fromarray(np.dstack([rgb, np.full((320, 480), 255, np.uint8)])).save(root / "images" / split / name)
        objects = [{**OBJECT, "color": CLEVR_PROPERTIES["color"][k % 8]} for k in range(n)]
        scenes.append({"image_index": i, "image_filename": name, "split": split, "objects": objects})
        images.append(rgb)
    (root / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"info": {}, "scenes": scenes[::-1]}))
    return images


def test_target_layout_is_the_official_order():
    target = clevr_target([OBJECT, {**OBJECT, "size": "small", "material": "rubber", "shape": "cube",
                                    "color": "gray", "3d_coords": [0.0, 1.5, -1.5]}])
    assert target.shape == (10, 19) and target.dtype == np.float32
    np.testing.assert_allclose(target[0, :3], [0.0, 0.5, 1.0])
    assert (target[0, 3:].nonzero()[0] + 3).tolist() == [4, 6, 9, 17, 18]  # large, metal, cylinder, cyan, real
    assert (target[1, 3:].nonzero()[0] + 3).tolist() == [3, 5, 7, 10, 18]  # small, rubber, cube, gray, real
    assert not target[2:].any()  # padding rows are all zero
    assert [len(v) for v in CLEVR_PROPERTIES.values()] == [2, 2, 3, 8]


def test_read_clevr_images_targets_order_and_filter(tmp_path):
    root = tmp_path / "CLEVR_v1.0"
    images = fake_clevr(root, "train", [3, 11, 10, 4])
    out = read_clevr(root, "train")
    assert out["image"].shape == (3, 128, 128, 3) and out["image"].dtype == np.uint8
    assert out["target"].shape == (3, 10, 19) and out["target"].dtype == np.float32
    assert out["target"][:, :, 18].sum(1).tolist() == [3, 10, 4]  # the 11-object scene is dropped
    # whole image (no crop), bilinear with half-pixel centres and no antialias, rounded back to uint8
    want = torch.nn.functional.interpolate(torch.from_numpy(images[0]).permute(2, 0, 1)[None].float(), size=(128, 128),
                                           mode="bilinear", align_corners=False, antialias=False)
    assert (torch.from_numpy(out["image"][0]).permute(2, 0, 1).float() - want[0]).abs().max() <= 0.5
    part = read_clevr(root, "train", start=2, stop=4, resolution=64)
    assert part["image"].shape == (2, 64, 64, 3) and part["target"][:, :, 18].sum(1).tolist() == [10, 4]


def test_clevr_errors_are_clear(tmp_path):
    root = tmp_path / "CLEVR_v1.0"
    fake_clevr(root, "val", [3, 3])
    with pytest.raises(FileNotFoundError, match="CLEVR_train_scenes.json"):
        read_clevr(root, "train")
    with pytest.raises(ValueError, match=r"scene range \[2, 5\) is empty or past the end \(2 scenes"):
        read_clevr(root, "val", 2, 5)
    with pytest.raises(ValueError, match="expected 'train' or 'val'"):
        read_clevr(root, "test")
    (root / "images" / "val" / "CLEVR_val_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="CLEVR_val_000001.png"):
        read_clevr(root, "val")
    with pytest.raises(ValueError, match=r"color='pink', expected one of \['gray'"):
        clevr_target([{**OBJECT, "color": "pink"}])


def test_clevr_data_spec(tmp_path):
    assert parse_data_spec(f"clevr:{tmp_path}") == DataSpec("clevr", str(tmp_path))
    with pytest.raises(ValueError, match="set prediction"):
        load_scenes(f"clevr:{tmp_path}")
