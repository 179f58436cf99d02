"""PASCAL VOC 2012 object segmentation (Everingham et al. 2010), from the official layout::

    DIR/JPEGImages/<id>.jpg  DIR/SegmentationObject/<id>.png  DIR/SegmentationClass/<id>.png
    DIR/ImageSets/Segmentation/{train,val}.txt   (DIR = VOCdevkit/VOC2012)

The PNGs are palette images: the index is the instance (SegmentationObject) or the class (SegmentationClass),
0 = background and 255 = the "void" border and difficult regions, which the DINOSAUR evaluation ignores (its
``ignore_mask``). Training images: ``ImageSets/Segmentation/trainaug.txt`` when present (the 10,582-image
"trainaug" list DINOSAUR trains on, which needs the SBD images), else ``train.txt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slotlab.data.real_images import PhotoSource


class VocSource(PhotoSource):
    def __init__(self, root: str | Path, split: str, resolution: int, mask_size: int = 320, start: int = 0,
                 stop: int | None = None) -> None:
        root = Path(root)
        lists = root / "ImageSets" / "Segmentation"
        names = ["trainaug", "train"] if split == "train" else [split]
        found = [lists / f"{n}.txt" for n in names if (lists / f"{n}.txt").is_file()]
        if not found:
            raise FileNotFoundError(f"VOC: no {lists / (names[-1] + '.txt')} (expected the VOC2012 layout: "
                                    "DIR/ImageSets/Segmentation/{train,val}.txt, DIR/JPEGImages, "
                                    "DIR/SegmentationObject, DIR/SegmentationClass)")
        self.ids = [line.strip() for line in found[0].read_text().splitlines() if line.strip()][start:stop]
        self.root, self.resolution, self.mask_size = root, resolution, mask_size
        self.name = f"voc2012/{found[0].stem}"
        self.key = f"voc2012:{root.resolve()}:{found[0].stem}:{start}:{stop}:{len(self.ids)}:{resolution}"

    def __len__(self) -> int:
        return len(self.ids)

    def image_file(self, i: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[i]}.jpg"

    def label_maps(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        maps = []
        for folder in ("SegmentationObject", "SegmentationClass"):
            path = self.root / folder / f"{self.ids[i]}.png"
            if not path.is_file():
                raise FileNotFoundError(f"VOC: no {path} (evaluation needs the segmentation PNGs)")
            with Image.open(path) as png:
                if png.mode != "P":
                    raise ValueError(f"VOC: {path} is a {png.mode} image; expected a palette (P) PNG whose "
                                     "indices are the labels")
                labels = np.array(png, dtype=np.int32)  # palette indices
            labels[labels == 255] = -1  # void: ignored
            maps.append(labels)
        return maps[0], maps[1]
