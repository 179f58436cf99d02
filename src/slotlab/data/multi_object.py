"""Readers for DeepMind's multi_object_datasets files (GZIP TFRecords of tf.train.Example), without TensorFlow.

Fields as in the official readers (google-deepmind/multi_object_datasets): ``image`` and
``mask`` stored as one 1-byte string per element, masks 0/255 with the background first, float32 factors per
object, and (CLEVR) uint8 codes stored as bytes. We return the arrays the built-in generators produce, so real
files plug into the same :class:`~slotlab.data.SceneSet` / item contract:

- ``image`` uint8 (N, H, W, 3) RGB (binarized Multi-dSprites is grayscale on disk: the channel is repeated);
- ``labels`` uint8 (N, H, W): the index of the mask each pixel belongs to. Index 0 is the background; Objects Room
  has 4 background masks (sky, floor, two wall halves), labels 0-3, and FG-ARI drops all of them
  (``Layout.num_background``); labels keep them apart so ARI with background stays the official one;
- ``visibility`` float32 (N, G) (Objects Room has none on disk: derived as "mask non-empty");
- every factor as float32 (N, G) or (N, G, C), with the official field names; CLEVR codes ``size``, ``material``,
  ``shape``, ``color`` are uint8 on disk and float32 here.

CLEVR with masks follows the paper's protocol (IODINE's data.py; docs/reference.md): crop rows 29:221 and columns
64:256, then resize to 128x128, bilinear with half-pixel centres and no antialiasing for the image (TF2
``tf.image.resize``), nearest for the masks. ``clevr6`` keeps only scenes with at most 6 objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from slotlab.data.tfrecord import TFRecordError, iter_indexed_records, parse_example

_DSPRITES_FACTORS = {"x": 1, "y": 1, "shape": 1, "color": 3, "visibility": 1, "orientation": 1, "scale": 1}
_CLEVR_CROP = ((29, 221), (64, 256))


@dataclass(frozen=True)
class Layout:
    """How one dataset kind is stored (``image_size``, G = ``num_masks``) and how slotlab serves it."""

    image_size: tuple[int, int]  # (H, W) on disk
    num_masks: int  # G: background mask(s) + object slots
    floats: dict[str, int] = field(default_factory=dict)  # float32 factor -> per-object width C
    codes: tuple[str, ...] = ()  # uint8 per-object codes stored as bytes (CLEVR)
    channels: int = 3  # 1: grayscale on disk (binarized Multi-dSprites), repeated to RGB
    mask_order: str = "GHW"  # "HWG": Multi-dSprites stores the mask as [H, W, G, 1]
    num_background: int = 1  # leading masks that are background (Objects Room: 4)
    crop: tuple[tuple[int, int], tuple[int, int]] | None = None  # ((row0, row1), (col0, col1)) before resizing
    resolution: int | None = None  # square output side after the crop (None: the stored size)
    max_objects: int | None = None  # keep only scenes with at most this many objects (CLEVR6)

    @property
    def fields(self) -> list[str]:
        return ["image", "mask", *self.floats, *self.codes]

    @property
    def output_size(self) -> tuple[int, int]:
        return (self.resolution, self.resolution) if self.resolution else self.image_size


_CLEVR = Layout((240, 320), 11, {"x": 1, "y": 1, "z": 1, "rotation": 1, "visibility": 1, "pixel_coords": 3},
                ("size", "material", "shape", "color"), crop=_CLEVR_CROP, resolution=128)
_DSPRITES_GRAYSCALE = Layout((64, 64), 6, _DSPRITES_FACTORS, mask_order="HWG")

LAYOUTS: dict[str, Layout] = {
    "tetrominoes": Layout((35, 35), 4, {"x": 1, "y": 1, "shape": 1, "color": 3, "visibility": 1}),
    "multi_dsprites_binarized": Layout((64, 64), 4, {**_DSPRITES_FACTORS, "color": 1}, channels=1, mask_order="HWG"),
    "multi_dsprites_colored_on_grayscale": _DSPRITES_GRAYSCALE,
    "multi_dsprites_colored_on_colored": dataclasses.replace(_DSPRITES_GRAYSCALE, num_masks=5),
    "multi_dsprites": _DSPRITES_GRAYSCALE,  # the variant the paper used
    "clevr_with_masks": _CLEVR,
    "clevr6": dataclasses.replace(_CLEVR, max_objects=6),
    "objects_room": Layout((64, 64), 7, num_background=4),
    "objects_room_six_objects": Layout((64, 64), 10, num_background=4),
    "objects_room_empty_room": Layout((64, 64), 4, num_background=4),
    "objects_room_identical_color": Layout((64, 64), 10, num_background=4),
}
ALIASES = {"multi_dsprites": "multi_dsprites_colored_on_grayscale", "clevr6": "clevr_with_masks"}


def get_layout(kind: str) -> Layout:
    if kind not in LAYOUTS:
        raise ValueError(f"unknown multi_object_datasets kind {kind!r}; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[kind]


def guess_kinds(example: dict) -> list[str]:
    """The kinds whose fields and sizes match a parsed record (aliases left out)."""
    found = []
    for kind, layout in LAYOUTS.items():
        if kind in ALIASES or set(example) != set(layout.fields):
            continue
        (H, W), G = layout.image_size, layout.num_masks
        if np.size(example["image"]) == H * W * layout.channels and np.size(example["mask"]) == G * H * W:
            found.append(kind)
    return found


def _wrong_kind_hint(kind: str, example: dict) -> str:
    others = [k for k in guess_kinds(example) if k != ALIASES.get(kind, kind)]
    return f" (this record looks like a {' or '.join(others)} file)" if others else f" (is this a {kind} file?)"


def decode_scene(kind: str, example: dict, where: str) -> dict[str, np.ndarray]:
    """One parsed record -> ``image`` (H, W, 3) uint8, ``labels`` (H, W) uint8, ``visibility`` (G,), factors, at the
    stored size. TFRecordError naming ``where`` on missing fields, wrong sizes or masks that are not a partition."""
    layout = get_layout(kind)
    (H, W), G, C = layout.image_size, layout.num_masks, layout.channels
    missing = [k for k in layout.fields if k not in example]
    if missing:
        raise TFRecordError(f"{where}: missing fields {missing}{_wrong_kind_hint(kind, example)}")
    image, mask = np.asarray(example["image"]), np.asarray(example["mask"])
    if image.dtype != np.uint8 or image.size != H * W * C:
        raise TFRecordError(f"{where}: image has {image.size} bytes, expected {H}x{W}x{C} uint8 for {kind}"
                            + _wrong_kind_hint(kind, example))
    if mask.dtype != np.uint8 or mask.size != G * H * W:
        raise TFRecordError(f"{where}: mask has {mask.size} bytes, expected {G}x{H}x{W} uint8 for {kind}"
                            + _wrong_kind_hint(kind, example))
    mask = mask.reshape(H, W, G).transpose(2, 0, 1) if layout.mask_order == "HWG" else mask.reshape(G, H, W)
    if not np.isin(mask, (0, 255)).all() or not (mask.astype(np.int32).sum(0) == 255).all():
        raise TFRecordError(f"{where}: masks must be 0/255 and partition the image (one 255 per pixel)")
    image = image.reshape(H, W, C)
    scene = {"image": np.repeat(image, 3, axis=2) if C == 1 else image, "labels": mask.argmax(0).astype(np.uint8)}
    if "visibility" not in layout.floats:  # Objects Room: not stored
        scene["visibility"] = mask.reshape(G, -1).any(1).astype(np.float32)
    for name, width in layout.floats.items():
        value = np.asarray(example[name], dtype=np.float32)
        if value.size != G * width:
            raise TFRecordError(f"{where}: field {name!r} has {value.size} values, expected {G * width}")
        scene[name] = value.reshape(G, width) if width > 1 else value
    for name in layout.codes:
        value = np.asarray(example[name])
        if value.dtype != np.uint8 or value.size != G:
            raise TFRecordError(f"{where}: field {name!r} has {value.size} values, expected {G} uint8 codes")
        scene[name] = value.astype(np.float32)
    return scene


def read_record(kind: str, record: bytes, where: str) -> dict[str, np.ndarray]:
    """:func:`parse_example` then :func:`decode_scene`; any malformed payload is a TFRecordError naming ``where``."""
    try:
        return decode_scene(kind, parse_example(record), where)
    except TFRecordError as err:
        if str(err).startswith(where):
            raise
        raise TFRecordError(f"{where}: {err}") from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as err:  # a value of the wrong kind
        raise TFRecordError(f"{where}: malformed record for {kind}: {err}") from None


def count_objects(scene: dict[str, np.ndarray], layout: Layout) -> int:
    """Objects present: non-zero ``visibility`` after the background mask(s)."""
    return int(np.count_nonzero(scene["visibility"][layout.num_background:]))


def crop_and_resize(scene: dict[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
    """The paper's CLEVR protocol: crop, then bilinear (half-pixel centres, no antialias; TF2 ``tf.image.resize``)
    for the image, rounded back to uint8, and nearest for the labels (equivalent to nearest on the one-hot masks)."""
    if layout.crop is None and layout.resolution is None:
        return scene
    (r0, r1), (c0, c1) = layout.crop or ((0, layout.image_size[0]), (0, layout.image_size[1]))
    size = layout.output_size
    image = torch.from_numpy(scene["image"][r0:r1, c0:c1]).permute(2, 0, 1)[None].float()  # (1, 3, h, w)
    image = torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=False)
    labels = torch.from_numpy(scene["labels"][r0:r1, c0:c1])[None, None].float()  # (1, 1, h, w)
    labels = torch.nn.functional.interpolate(labels, size=size, mode="nearest-exact")
    return {**scene, "image": image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy(),
            "labels": labels[0, 0].to(torch.uint8).numpy()}


def iter_scenes(kind: str, path: str | Path, start: int = 0, stop: int | None = None,
                select: Callable[[int], bool] | None = None, preprocess: bool = True,
                max_objects: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(record_index, scene)`` for the records in [start, stop) (and ``select``), after the kind's protocol
    (crop/resize; the object-count filter of ``max_objects`` or the kind's own, e.g. clevr6)."""
    layout = get_layout(kind)
    limit = max_objects if max_objects is not None else layout.max_objects
    for index, record in iter_indexed_records(path, start, stop, select):
        scene = read_record(kind, record, f"{path}: record {index}")
        if limit is not None and count_objects(scene, layout) > limit:
            continue
        yield index, crop_and_resize(scene, layout) if preprocess else scene


def read_multi_object(kind: str, path: str | Path, start: int = 0, stop: int | None = None,
                      limit: int | None = None, preprocess: bool = True,
                      max_objects: int | None = None) -> dict[str, np.ndarray]:
    """Read the scenes of records [start, stop) of dataset ``kind`` from ``path`` (at most ``limit`` of them), as
    stacked arrays (module docstring). TFRecordError naming the file and record if anything is wrong or the range
    holds no scene."""
    scenes = []
    for _index, scene in iter_scenes(kind, path, start, stop, preprocess=preprocess, max_objects=max_objects):
        scenes.append(scene)
        if limit is not None and len(scenes) >= limit:
            break
    if not scenes:
        raise TFRecordError(f"{path}: no scenes of {kind} in records [{start}, {stop}) (all filtered out)")
    return {key: np.stack([s[key] for s in scenes]) for key in scenes[0]}
