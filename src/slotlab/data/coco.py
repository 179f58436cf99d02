"""COCO 2017 with instance masks (Lin et al. 2014), read with ``pycocotools`` from the official layout::

    DIR/annotations/instances_train2017.json   DIR/train2017/<file_name>.jpg
    DIR/annotations/instances_val2017.json     DIR/val2017/<file_name>.jpg

Images are ordered by image id. Instance masks come from the annotations' polygons or RLE (``annToMask``). As the
DINOSAUR evaluation (official ``coco_nocrowd`` data): crowd annotations (``iscrowd=1``) are left out; pixels
covered by two or more instances are ignored (``ignore_overlaps``); the class map gives each pixel the largest
category id among the instances covering it (``AddSegmentationMaskFromInstanceMask``). Images without instances
stay in the data (they train) and are skipped by the metrics, which have nothing to measure there.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from slotlab.data.real_images import PhotoSource


class CocoSource(PhotoSource):
    def __init__(self, root: str | Path, split: str, resolution: int, mask_size: int = 320, start: int = 0,
                 stop: int | None = None) -> None:
        root = Path(root)
        ann = root / "annotations" / f"instances_{split}2017.json"
        if not ann.is_file():
            raise FileNotFoundError(f"COCO: no {ann} (expected the COCO 2017 layout: DIR/annotations/"
                                    f"instances_{{train,val}}2017.json and DIR/{{train,val}}2017/*.jpg)")
        try:
            from pycocotools.coco import COCO
        except ImportError as err:
            raise RuntimeError("COCO needs pycocotools: pip install 'slotlab[real]'") from err
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            self.coco = COCO(str(ann))
        self.ids = sorted(self.coco.getImgIds())[start:stop]
        self.folder = root / f"{split}2017"
        self.resolution, self.mask_size = resolution, mask_size
        self.name = f"coco2017/{split}"
        self.key = f"coco2017:{root.resolve()}:{split}:{start}:{stop}:{len(self.ids)}:{resolution}"

    def __len__(self) -> int:
        return len(self.ids)

    def image_file(self, i: int) -> Path:
        return self.folder / self.coco.imgs[self.ids[i]]["file_name"]

    def label_maps(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        info = self.coco.imgs[self.ids[i]]
        shape = (info["height"], info["width"])
        instances, classes = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        count = np.zeros(shape, np.int32)
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=self.ids[i], iscrowd=False))
        for n, ann in enumerate(anns, start=1):
            mask = self.coco.annToMask(ann).astype(bool)  # polygons or RLE -> (H, W)
            instances[mask] = n
            count += mask
            classes[mask] = np.maximum(classes[mask], ann["category_id"])
        instances[count > 1] = -1  # overlapping instances: ignored
        return instances, classes
