"""Readers for DeepMind's multi_object_datasets files (GZIP TFRecords of tf.train.Example), without TensorFlow.

Fields as in the official readers (SPEC.md section 6): ``image`` [H, W, 3] and ``mask`` [G, H, W, 1] stored as one
1-byte string per element, masks 0/255 with the background first; float factors per object. We return the same
arrays the built-in generators produce (``image`` uint8 NHWC, ``labels`` uint8 NHW, ``visibility`` and factors),
so real files plug into the same :class:`~slotlab.data.SceneSet` / item contract.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slotlab.data.tfrecord import TFRecordError, iter_records, parse_example

# kind -> (image size, G, float factor fields with their per-object width)
LAYOUTS = {
    "tetrominoes": ((35, 35), 4, {"x": 1, "y": 1, "shape": 1, "color": 3, "visibility": 1}),
}


def read_multi_object(kind: str, path: str | Path, limit: int | None = None) -> dict[str, np.ndarray]:
    """Read up to ``limit`` scenes of dataset ``kind`` from the TFRecord file ``path``."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown multi_object_datasets kind {kind!r}; expected one of {sorted(LAYOUTS)}")
    (H, W), G, factors = LAYOUTS[kind]
    images, labels, columns = [], [], {name: [] for name in factors}
    for index, record in enumerate(iter_records(path)):
        if limit is not None and index >= limit:
            break
        ex = parse_example(record)
        where = f"{path}: record {index}"
        missing = [k for k in ["image", "mask", *factors] if k not in ex]
        if missing:
            raise TFRecordError(f"{where}: missing fields {missing} (is this a {kind} file?)")
        image, mask = np.asarray(ex["image"]), np.asarray(ex["mask"])
        if image.dtype != np.uint8 or image.size != H * W * 3:
            raise TFRecordError(f"{where}: image has {image.size} bytes, expected {H}x{W}x3 uint8 for {kind}")
        if mask.dtype != np.uint8 or mask.size != G * H * W:
            raise TFRecordError(f"{where}: mask has {mask.size} bytes, expected {G}x{H}x{W} for {kind}")
        mask = mask.reshape(G, H, W)
        if not np.isin(mask, (0, 255)).all() or not (mask.astype(np.int32).sum(0) == 255).all():
            raise TFRecordError(f"{where}: masks must be 0/255 and partition the image")
        images.append(image.reshape(H, W, 3))
        labels.append(mask.argmax(0).astype(np.uint8))
        for name, width in factors.items():
            value = np.asarray(ex[name], dtype=np.float32)
            if value.size != G * width:
                raise TFRecordError(f"{where}: field {name!r} has {value.size} values, expected {G * width}")
            columns[name].append(value.reshape(G, width) if width > 1 else value)
    if not images:
        raise TFRecordError(f"{path}: no records (empty file or empty range)")
    out = {"image": np.stack(images), "labels": np.stack(labels)}
    out.update({name: np.stack(v) for name, v in columns.items()})
    return out
