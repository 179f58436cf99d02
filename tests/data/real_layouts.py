"""Small COCO 2017 and PASCAL VOC 2012 folders in the official layouts, written by the tests (no slotlab code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(rng: np.random.Generator, h: int, w: int, boxes) -> Image.Image:
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    for (y0, y1, x0, x1), color in boxes:
        image[y0:y1, x0:x1] = color
    return Image.fromarray(image)


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def write_coco(root: Path, split: str, num_images: int, h: int = 64, w: int = 80, seed: int = 0) -> Path:
    """DIR/annotations/instances_{split}2017.json + DIR/{split}2017/*.jpg. Image i holds: a polygon rectangle
    (category 3), an RLE rectangle (category 7) overlapping it by a 4x4 corner, and a crowd RLE (category 1);
    image ids descend so that the reader's ordering by id is exercised."""
    rng = np.random.default_rng(seed)
    folder = root / f"{split}2017"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        image_id = 1000 - i
        a = (8, 28, 10, 30 + i % 3)  # y0, y1, x0, x1
        b = (24, 44, 26, 50)
        crowd = (50, 60, 60, 76)
        _photo(rng, h, w, [(a, (250, 30, 30)), (b, (30, 250, 30)), (crowd, (30, 30, 250))]).save(
            folder / f"{image_id:012d}.jpg", quality=95)
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": h, "width": w})
        y0, y1, x0, x1 = a
        polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
        anns.append({"id": 3 * i + 1, "image_id": image_id, "category_id": 3, "iscrowd": 0,
                     "segmentation": [polygon], "area": 1.0, "bbox": [x0, y0, x1 - x0, y1 - y0]})
        mask = np.zeros((h, w), np.uint8)
        mask[b[0]:b[1], b[2]:b[3]] = 1
        anns.append({"id": 3 * i + 2, "image_id": image_id, "category_id": 7, "iscrowd": 0,
                     "segmentation": _rle(mask), "area": 1.0, "bbox": [b[2], b[0], 24, 20]})
        mask = np.zeros((h, w), np.uint8)
        mask[crowd[0]:crowd[1], crowd[2]:crowd[3]] = 1
        anns.append({"id": 3 * i + 3, "image_id": image_id, "category_id": 1, "iscrowd": 1,
                     "segmentation": _rle(mask), "area": 1.0, "bbox": [60, 50, 16, 10]})
    categories = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in (1, 3, 7)]
    path = root / "annotations" / f"instances_{split}2017.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def _palette_png(labels: np.ndarray, path: Path) -> None:
    png = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = np.random.default_rng(1).integers(0, 256, 768).astype(np.uint8).tolist()
    png.putpalette(palette)
    png.save(path)


def write_voc(root: Path, train: int, val: int, h: int = 64, w: int = 80, seed: int = 0) -> Path:
    """VOCdevkit/VOC2012 layout: JPEGImages, SegmentationObject / SegmentationClass palette PNGs (255 = a 2-pixel
    void border around each object), ImageSets/Segmentation/{train,val}.txt."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = [f"2007_{i:06d}" for i in range(train + val)]
    for i, name in enumerate(names):
        a, b = (6, 26, 8, 30), (30, 54, 40, 70)
        _photo(rng, h, w, [(a, (200, 40, 40)), (b, (40, 40, 200))]).save(root / "JPEGImages" / f"{name}.jpg")
        obj, cls = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        for n, ((y0, y1, x0, x1), category) in enumerate([(a, 15), (b, 12 if i % 2 else 15)], start=1):
            for m in (obj, cls):
                m[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = 255
            obj[y0:y1, x0:x1], cls[y0:y1, x0:x1] = n, category
        _palette_png(obj, root / "SegmentationObject" / f"{name}.png")
        _palette_png(cls, root / "SegmentationClass" / f"{name}.png")
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(names[:train]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[train:]) + "\n")
    return root
