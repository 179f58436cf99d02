"""Real photographs for the features task: the preprocessing of the DINOSAUR evaluation, shared by COCO and VOC.

Images: the short side resized to the model's resolution R (bicubic; PIL antialiases when it shrinks), then the
centre R x R crop, as the official configs (amazon-science/object-centric-learning-framework,
``configs/experiment/projects/bridging``: ``Resize(224, BICUBIC)``, ``CenterCrop(224)``). Label maps: the short
side resized to the metric size S with nearest-exact sampling (labels must not blend), then the centre S x S crop
(the official evaluation uses S = 320: ``ResizeNearestExact(320)``, ``CenterCrop(320)``); the predicted masks are
upsampled to S. Both crops keep the same part of the photograph, so masks and predictions line up.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to ``size`` (the long side truncated, as torchvision)."""
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def center_offsets(h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left corner of the centre ``size`` x ``size`` crop (rounded as torchvision's CenterCrop)."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def resize_crop_image(image, size: int) -> Tensor:
    """A PIL image -> uint8 (3, size, size) RGB: short side to ``size`` (bicubic), centre crop."""
    from PIL import Image

    image = image.convert("RGB")
    h, w = short_side_size(image.height, image.width, size)
    image = image.resize((w, h), Image.BICUBIC)
    top, left = center_offsets(h, w, size)
    array = np.asarray(image)[top:top + size, left:left + size]  # (size, size, 3)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def resize_crop_labels(labels: np.ndarray, size: int) -> Tensor:
    """An int label map (H, W) -> int16 (size, size): short side to ``size`` (nearest-exact), centre crop."""
    H, W = labels.shape
    h, w = short_side_size(H, W, size)
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)  # nearest-exact source rows
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    top, left = center_offsets(h, w, size)
    out = labels[rows[top:top + size]][:, cols[left:left + size]]
    return torch.from_numpy(out.astype(np.int16))


def as_positions(index, length: int) -> list[int]:
    """A slice or an index tensor / array / list -> a list of item positions."""
    if isinstance(index, slice):
        return list(range(length))[index]
    return [int(i) for i in (index.tolist() if hasattr(index, "tolist") else index)]


class PhotoSource:
    """Base of the COCO and VOC sources: subclasses set ``name``, ``key``, ``resolution``, ``mask_size`` and
    implement ``__len__``, ``image_file(i)`` and ``label_maps(i)`` -> (instances, classes) int arrays at the
    photograph's size (0 background, -1 ignored)."""

    resolution: int
    mask_size: int

    def images(self, index) -> Tensor:
        from PIL import Image

        out = []
        for i in as_positions(index, len(self)):
            with Image.open(self.image_file(i)) as image:
                out.append(resize_crop_image(image, self.resolution))
        return torch.stack(out)  # (B, 3, R, R) uint8

    def targets(self, index) -> dict[str, Tensor]:
        instances, classes = [], []
        for i in as_positions(index, len(self)):
            inst, cls = self.label_maps(i)
            instances.append(resize_crop_labels(inst, self.mask_size))
            classes.append(resize_crop_labels(cls, self.mask_size))
        return {"instances": torch.stack(instances), "classes": torch.stack(classes)}  # (B, S, S) int16
