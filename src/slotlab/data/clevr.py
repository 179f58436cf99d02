"""CLEVR v1.0 (Johnson et al. 2017) for set prediction: images + scene JSON -> 128x128 images and 19-dim targets.

Layout on disk (the official download, ``CLEVR_v1.0.zip``)::

    CLEVR_v1.0/images/{train,val}/CLEVR_{split}_{index:06d}.png    480x320 RGBA renders
    CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json                {"scenes": [{"image_index", "image_filename",
                                                                     "objects": [{"3d_coords", "size", "material",
                                                                                  "shape", "color", ...}]}]}

Preprocessing as the official Slot Attention set-prediction code (docs/reference.md): the whole image, not
cropped, resized to 128x128 bilinear with half-pixel centres and no antialiasing (TF2 ``tf.image.resize``; the
aspect ratio is squashed), alpha dropped; returned as uint8 (rounded; the model maps it to [-1, 1]). Scenes with
more than ``max_objects`` (10) objects are filtered out, as the official code does (CLEVR has 3-10, so none are).

Target rows (P = 19, the official index order; class orders of tensorflow_datasets' CLEVR features):
``[0:3]`` 3d_coords rescaled (c + 3) / 6, ``[3:5]`` size, ``[5:7]`` material, ``[7:10]`` shape, ``[10:18]`` color
(one-hot over ``CLEVR_PROPERTIES``), ``[18]`` 1 for a real object. Padding rows are all zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLEVR_PROPERTIES: dict[str, list[str]] = {
    "size": ["small", "large"],
    "material": ["rubber", "metal"],
    "shape": ["cube", "sphere", "cylinder"],
    "color": ["gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan"],
}
NUM_PROPERTIES = 3 + sum(len(v) for v in CLEVR_PROPERTIES.values()) + 1  # P = 19
MAX_OBJECTS = 10
_RESIZE_CHUNK = 64  # images resized per interpolate call


def clevr_target(objects: list[dict], max_objects: int = MAX_OBJECTS) -> np.ndarray:
    """The (max_objects, 19) float32 target of one scene from its scene-JSON ``objects``; padding rows zero."""
    if len(objects) > max_objects:
        raise ValueError(f"scene has {len(objects)} objects, more than max_objects={max_objects}")
    target = np.zeros((max_objects, NUM_PROPERTIES), dtype=np.float32)
    for row, obj in enumerate(objects):
        coords = obj.get("3d_coords")
        if coords is None or len(coords) != 3:
            raise ValueError(f"object {row}: expected '3d_coords' with 3 numbers, got {coords!r}")
        target[row, 0:3] = (np.asarray(coords, dtype=np.float32) + 3.0) / 6.0
        offset = 3
        for name, classes in CLEVR_PROPERTIES.items():
            value = obj.get(name)
            if value not in classes:
                raise ValueError(f"object {row}: {name}={value!r}, expected one of {classes}")
            target[row, offset + classes.index(value)] = 1.0
            offset += len(classes)
        target[row, 18] = 1.0
    return target


def _load_scenes(root: Path, split: str) -> list[dict]:
    if split not in ("train", "val"):
        raise ValueError(f"CLEVR split {split!r}: expected 'train' or 'val' (the test split has no scenes)")
    file = root / "scenes" / f"CLEVR_{split}_scenes.json"
    if not root.is_dir():
        raise FileNotFoundError(f"CLEVR directory not found: {root} (expected the unzipped CLEVR_v1.0)")
    if not file.is_file():
        raise FileNotFoundError(f"CLEVR scenes not found: {file} (expected scenes/CLEVR_{split}_scenes.json)")
    try:
        scenes = json.loads(file.read_text())["scenes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{file}: not a CLEVR scenes file ({err!r}); expected {{'scenes': [...]}}") from err
    return sorted(scenes, key=lambda s: s.get("image_index", 0))


def _read_image(file: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, alpha dropped."""
    if not file.is_file():
        raise FileNotFoundError(f"CLEVR image not found: {file}")
    with Image.open(file) as img:
        return np.asarray(img.convert("RGB"))


def resize_bilinear(images: np.ndarray, resolution: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, R, R, 3) uint8: bilinear, half-pixel centres, no antialias, rounded."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                        antialias=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, R, R, 3)


def read_clevr(root: str | Path, split: str = "train", start: int = 0, stop: int | None = None,
               max_objects: int = MAX_OBJECTS, resolution: int = 128) -> dict[str, np.ndarray]:
    """Scenes [start, stop) (in ``image_index`` order) of CLEVR v1.0 ``split`` at ``root`` (the CLEVR_v1.0 folder).

    Returns ``image`` uint8 (N, resolution, resolution, 3) and ``target`` float32 (N, max_objects, 19). Scenes with
    more than ``max_objects`` objects are dropped after taking the range. Errors name the file and scene.
    """
    root = Path(root)
    scenes = _load_scenes(root, split)
    stop = len(scenes) if stop is None else stop
    if not 0 <= start < stop or stop > len(scenes):
        raise ValueError(f"CLEVR {split}: scene range [{start}, {stop}) is empty or past the end "
                         f"({len(scenes)} scenes in {root / 'scenes'})")
    images, targets, chunk = [], [], []
    for i in range(start, stop):
        scene = scenes[i]
        objects = scene.get("objects", [])
        if len(objects) > max_objects:
            continue
        name = scene.get("image_filename", f"CLEVR_{split}_{scene.get('image_index', i):06d}.png")
        try:
            targets.append(clevr_target(objects, max_objects))
        except ValueError as err:
            raise ValueError(f"{root / 'scenes'}: CLEVR {split} scene {i} ({name}): {err}") from err
        image = _read_image(root / "images" / split / name)
        if chunk and image.shape != chunk[0].shape:  # resize same-sized images together
            images.append(resize_bilinear(np.stack(chunk), resolution))
            chunk = []
        chunk.append(image)
        if len(chunk) == _RESIZE_CHUNK:
            images.append(resize_bilinear(np.stack(chunk), resolution))
            chunk = []
    if chunk:
        images.append(resize_bilinear(np.stack(chunk), resolution))
    if not targets:
        raise ValueError(f"CLEVR {split}: no scenes with at most {max_objects} objects in [{start}, {stop})")
    return {"image": np.concatenate(images), "target": np.stack(targets)}
