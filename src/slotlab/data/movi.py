"""MOVi (Kubric; Greff et al., CVPR 2022) as released in TensorFlow Datasets files, read without TensorFlow.

A TFDS split is a set of uncompressed TFRecord shards (``movi_a-train.tfrecord-00000-of-01024`` ...), one
``tf.train.Example`` per video. TFDS flattens the nested features with "/" and encodes them as follows (the
Kubric builders ``challenges/movi/movi_*.py`` and TFDS's example serializer):

- ``video``: ``Video(shape=(F, H, W, 3))`` -> a bytes list of F PNG images (RGB, 8 bit);
- ``segmentations``: ``Sequence(Image(shape=(H, W, 1), uint8), length=F)`` -> F grayscale PNGs; the value is the
  instance index + 1, 0 = background;
- ``forward_flow``: ``Sequence(Tensor(shape=(H, W, 2), uint16), length=F)`` -> one int64 list of F*H*W*2 values
  (dy, dx), mapped linearly from [0, 65535] to ``metadata/forward_flow_range`` (pixels);
- ``metadata/num_frames``, ``metadata/height``, ``metadata/width``, ``metadata/num_instances``: int64 lists;
- ``instances/bboxes``: ``Sequence(Sequence(BBoxFeature))`` -> ``instances/bboxes/ragged_flat_values`` (float
  list of (ymin, xmin, ymax, xmax) in [0, 1]) and ``instances/bboxes/ragged_row_lengths_0`` (boxes per instance),
  for the frames listed in ``instances/bbox_frames/ragged_flat_values`` (with its own ``ragged_row_lengths_0``);
- ``instances/image_positions``: ``Tensor(shape=(F, 2))`` per instance -> a float list of num_instances*F*2
  (y, x) centres of mass in [0, 1].

Everything else (depth, normals, cameras, events, ...) is left unread. :func:`convert_movi` writes a split as a
slotlab video cache (``slotlab.data.video``), optionally downsampled as Kubric downsamples (mean over blocks for
RGB, the block's centre-most pixel for segmentation and flow, flow divided by the factor).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slotlab.data.tfrecord import TFRecordError, iter_records, parse_example

REQUIRED = ("video", "segmentations", "metadata/num_frames", "metadata/height", "metadata/width")


class MoviError(ValueError):
    """A MOVi record lacks a feature or holds one that does not decode as the release defines it."""


def _png(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise MoviError(f"{where}: expected a PNG image, got {image.format}")
            return np.asarray(image)
    except MoviError:
        raise
    except Exception as err:  # PIL raises many types for damaged data
        raise MoviError(f"{where}: cannot decode PNG ({type(err).__name__}: {err})") from err


def _scalar(features: dict, key: str, where: str) -> int:
    value = features[key]
    if not isinstance(value, np.ndarray) or value.size != 1:
        raise MoviError(f"{where}: feature {key!r} must hold one integer")
    return int(value[0])


def decode_movi_example(record: bytes, where: str = "record") -> dict[str, np.ndarray]:
    """One serialized MOVi example -> ``video`` uint8 (F, H, W, 3), ``labels`` uint8 (F, H, W), ``flow`` float32
    (F, H, W, 2) (dy, dx) pixels or absent, and per instance (I = num_instances) ``boxes`` float32 (I, 4) of the
    first frame (zeros where the instance is not visible in it) and ``centers`` float32 (I, 2) (y, x) in [0, 1].
    ``where`` names the record in errors."""
    try:
        features = parse_example(record)
    except (TFRecordError, IndexError, UnicodeDecodeError) as err:
        raise MoviError(f"{where}: not a tf.train.Example ({err})") from err
    missing = [key for key in REQUIRED if key not in features]
    if missing:
        raise MoviError(f"{where}: missing MOVi features {missing} (found {sorted(features)[:12]} ...)")
    F, H, W = (_scalar(features, f"metadata/{k}", where) for k in ("num_frames", "height", "width"))
    frames = [_png(data, f"{where} video frame {t}") for t, data in enumerate(features["video"])]
    segs = [_png(data, f"{where} segmentation frame {t}") for t, data in enumerate(features["segmentations"])]
    if len(frames) != F or len(segs) != F:
        raise MoviError(f"{where}: metadata/num_frames={F} but {len(frames)} video and {len(segs)} segmentation "
                        "frames")
    video, labels = np.stack(frames), np.stack(segs)
    if labels.ndim == 4:
        labels = labels[..., 0]
    if video.shape != (F, H, W, 3) or labels.shape != (F, H, W):
        raise MoviError(f"{where}: video {video.shape} / segmentations {labels.shape} disagree with the metadata "
                        f"(F, H, W) = {(F, H, W)}")
    out = {"video": video.astype(np.uint8), "labels": labels.astype(np.uint8)}
    if "forward_flow" in features:
        raw = np.asarray(features["forward_flow"])
        if raw.size != F * H * W * 2 or "metadata/forward_flow_range" not in features:
            raise MoviError(f"{where}: forward_flow must hold F*H*W*2 = {F * H * W * 2} values with "
                            f"metadata/forward_flow_range, got {raw.size}")
        lo, hi = (float(v) for v in features["metadata/forward_flow_range"])
        out["flow"] = (raw.reshape(F, H, W, 2) / 65535.0 * (hi - lo) + lo).astype(np.float32)
    num = _scalar(features, "metadata/num_instances", where) if "metadata/num_instances" in features else 0
    out["boxes"], out["centers"] = _first_frame_instances(features, num, F, where)
    return out


def _first_frame_instances(features: dict, num: int, F: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.zeros((num, 4), np.float32)
    centers = np.zeros((num, 2), np.float32)
    if "instances/bboxes/ragged_flat_values" in features:
        flat = np.asarray(features["instances/bboxes/ragged_flat_values"], np.float32).reshape(-1, 4)
        lengths = np.asarray(features["instances/bboxes/ragged_row_lengths_0"], np.int64)
        frames = np.asarray(features["instances/bbox_frames/ragged_flat_values"], np.int64)
        if len(lengths) != num or lengths.sum() != len(flat) or len(frames) != len(flat):
            raise MoviError(f"{where}: instances/bboxes ragged values ({len(flat)} boxes, {len(frames)} frames, "
                            f"row lengths {lengths.tolist()}) do not match num_instances={num}")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        for i, (s, n) in enumerate(zip(starts, lengths, strict=True)):
            first = np.nonzero(frames[s:s + n] == 0)[0]
            if len(first):
                boxes[i] = flat[s + first[0]]
    if "instances/image_positions" in features:
        pos = np.asarray(features["instances/image_positions"], np.float32)
        if pos.size != num * F * 2:
            raise MoviError(f"{where}: instances/image_positions holds {pos.size} values, expected "
                            f"num_instances * F * 2 = {num * F * 2}")
        centers = pos.reshape(num, F, 2)[:, 0]
    return boxes, centers


def _downsample(item: dict[str, np.ndarray], factor: int) -> dict[str, np.ndarray]:
    """Kubric's own downsampling: RGB averaged over factor x factor blocks; segmentation and flow take the pixel at
    offset (factor - 1) // 2 of each block, flow divided by the factor (pixels of the smaller frame)."""
    F, H, W, _ = item["video"].shape
    if H % factor or W % factor:
        raise MoviError(f"cannot downsample {H}x{W} frames by {factor}; choose a resolution that divides them")
    o = (factor - 1) // 2
    blocks = item["video"].reshape(F, H // factor, factor, W // factor, factor, 3).astype(np.float64)
    out = dict(item)
    out["video"] = np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)
    out["labels"] = item["labels"][:, o::factor, o::factor]
    if "flow" in item:
        out["flow"] = item["flow"][:, o::factor, o::factor] / factor
    return out


def count_records(path: str | Path) -> int:
    """Records in an uncompressed TFRecord file, from the length headers alone (no data read)."""
    path = Path(path)
    size, count, pos = path.stat().st_size, 0, 0
    with open(path, "rb") as f:
        while pos < size:
            header = f.read(12)
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated header at record {count}")
            pos += 12 + struct.unpack("<Q", header[:8])[0] + 4
            if pos > size:
                raise TFRecordError(f"{path}: truncated data at record {count}")
            f.seek(pos)
            count += 1
    return count


def split_files(directory: str | Path, split: str) -> list[Path]:
    """The TFDS shards of ``split`` in ``directory`` (``*-{split}.tfrecord-*``), in shard order."""
    directory = Path(directory)
    files = sorted(directory.glob(f"*-{split}.tfrecord*"))
    if not files:
        raise FileNotFoundError(f"no TFDS shards '*-{split}.tfrecord*' in {directory} (expected the MOVi release "
                                f"directory, e.g. movi_a/128x128/1.0.0)")
    return files


def convert_movi(directory: str | os.PathLike, out_dir: str | os.PathLike, split: str = "train", *,
                 resolution: int | None = None, max_instances: int = 10, limit: int | None = None,
                 progress: bool = True) -> Path:
    """Convert a MOVi split (its TFDS shards in ``directory``) to a slotlab video cache at ``out_dir``.

    ``resolution`` downsamples the frames (e.g. 64 for SAVi); ``max_instances`` bounds the objects per video
    (G = max_instances + 1 masks; a video with more is an error naming it); ``limit`` converts the first videos only.
    """
    from slotlab.data.cache import _atomic_dir, _write_meta
    from slotlab.data.video import _video_meta

    files = split_files(directory, split)
    counts = [count_records(f) for f in files]
    total = sum(counts) if limit is None else min(limit, sum(counts))
    if total < 1:
        raise MoviError(f"{directory}: split {split!r} holds no videos")
    out_dir = Path(out_dir)
    bar = tqdm(total=total, desc=f"MOVi {split}", disable=not progress, unit="video")
    outputs: dict[str, np.ndarray] = {}
    with _atomic_dir(out_dir) as tmp:
        index = 0
        for file in files:
            for r, record in enumerate(iter_records(file, compression=None)):
                if index >= total:
                    break
                item = decode_movi_example(record, f"{file} record {r}")
                factor = item["video"].shape[1] // resolution if resolution else 1
                if resolution and item["video"].shape[1] != factor * resolution:
                    raise MoviError(f"{file} record {r}: {item['video'].shape[1]}px frames do not downsample to "
                                    f"{resolution}px by an integer factor")
                item = _downsample(item, factor) if factor > 1 else item
                if int(item["labels"].max()) > max_instances:
                    raise MoviError(f"{file} record {r}: instance id {int(item['labels'].max())} > max_instances="
                                    f"{max_instances}; convert with a larger max_instances")
                row = _cache_row(item, max_instances + 1)
                if not outputs:
                    outputs = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", "w+", v.dtype, (total, *v.shape))
                               for k, v in row.items()}
                for key, value in row.items():
                    outputs[key][index] = value
                index += 1
                bar.update(1)
            if index >= total:
                break
        bar.close()
        for array in outputs.values():
            array.flush()
        _write_meta(tmp, _video_meta(outputs, f"movi:{split}", None, max_instances + 1,
                                     {"source": str(Path(directory).resolve())}))
        del outputs
    return out_dir


def _cache_row(item: dict[str, np.ndarray], G: int) -> dict[str, np.ndarray]:
    """One video in the cache layout: per-object rows padded to G (row 0 = background)."""
    boxes, centers = np.zeros((G, 4), np.float32), np.zeros((G, 2), np.float32)
    n = min(len(item["boxes"]), G - 1)
    boxes[1:n + 1], centers[1:n + 1] = item["boxes"][:n], item["centers"][:n]
    row = {"video": item["video"], "labels": item["labels"], "boxes": boxes, "centers": centers}
    if "flow" in item:
        row["flow"] = item["flow"].astype(np.float16)
    return row
