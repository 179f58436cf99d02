"""Video datasets: the on-disk cache of videos, the in-memory split that serves clips or whole videos, and the
conditioning signals SAVi uses (first-frame centres of mass and boxes).

Cache (format version 1, one directory; written atomically like the image cache in ``cache.py``)::

    meta.json      {"format_version", "kind": "video", "name", "seed", "num", "num_objects", "num_frames",
                    "image_size", "arrays": {key: {"dtype", "shape"}}}
    video.npy      uint8   (N, F, H, W, 3) RGB
    labels.npy     uint8   (N, F, H, W)   object id per pixel, 0 = background, stable over time
    motion.npy     float32 (N, F, G, 2)   per-object displacement to the next frame (built-in generators), or
    flow.npy       float16 (N, F, H, W, 2) per-pixel forward flow (dy, dx) in pixels (converted MOVi)

Batch contract (:meth:`VideoSet.batch`): ``video`` float32 (B, F, 3, H, W) in [-1, 1]; ``masks`` float32
(B, F, G, H, W) one-hot (index 0 = background); ``flow`` float32 (B, F, 2, H, W) in pixels (dy, dx);
``centers`` (B, G, 3) and ``boxes`` (B, G, 5): the first frame's signal of each object, (y, x) or
(ymin, xmin, ymax, xmax) in [0, 1], followed by a presence flag (1 = an object visible in the first frame; the
background row 0 and absent objects are all zero).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from slotlab.data.cache import _atomic_dir, _write_meta
from slotlab.data.moving_sprites import NUM_OBJECTS as SPRITES_OBJECTS
from slotlab.data.moving_sprites import TETROMINO_OBJECTS, generate_moving_sprites, generate_moving_tetrominoes

VIDEO_FORMAT_VERSION = 1
VIDEO_GENERATORS = {"moving_sprites": (generate_moving_sprites, SPRITES_OBJECTS),
                    "moving_tetrominoes": (generate_moving_tetrominoes, TETROMINO_OBJECTS)}
_CHUNK = 256  # videos generated and written at a time


# ---------------------------------------------------------------------------------------------------------------
# Conditioning signals


def first_frame_signals(labels: Tensor, num_objects: int) -> dict[str, Tensor]:
    """Centres of mass and boxes of each object's visible pixels in a frame.

    labels: (B, H, W) integer object ids. Returns ``centers`` (B, G, 3) = (y, x, present) and ``boxes`` (B, G, 5) =
    (ymin, xmin, ymax, xmax, present), coordinates in [0, 1] (pixel i covers [i / H, (i + 1) / H)); the background
    row 0 and absent objects are all zero.
    """
    B, H, W = labels.shape
    onehot = torch.nn.functional.one_hot(labels.long(), num_objects).permute(0, 3, 1, 2).double()  # (B, G, H, W)
    onehot[:, 0] = 0  # the background is no object
    area = onehot.sum(dim=(2, 3))  # (B, G)
    present = (area > 0).double()
    ys = (torch.arange(H, dtype=torch.float64) + 0.5) / H
    xs = (torch.arange(W, dtype=torch.float64) + 0.5) / W
    cy = (onehot.sum(3) * ys).sum(2) / area.clamp(min=1)  # (B, G)
    cx = (onehot.sum(2) * xs).sum(2) / area.clamp(min=1)
    rows, cols = onehot.amax(3) > 0, onehot.amax(2) > 0  # (B, G, H), (B, G, W)
    first_row = torch.where(rows, torch.arange(H), H).amin(2)
    last_row = torch.where(rows, torch.arange(H), -1).amax(2) + 1
    first_col = torch.where(cols, torch.arange(W), W).amin(2)
    last_col = torch.where(cols, torch.arange(W), -1).amax(2) + 1
    boxes = torch.stack([first_row / H, first_col / W, last_row / H, last_col / W], dim=-1) * present[..., None]
    centers = torch.stack([cy, cx], dim=-1) * present[..., None]
    return {"centers": torch.cat([centers, present[..., None]], -1).float(),
            "boxes": torch.cat([boxes, present[..., None]], -1).float()}


def flow_to_rgb(flow: Tensor, max_magnitude: float) -> Tensor:
    """Optical flow (..., 2, H, W) (dy, dx) in pixels -> an RGB picture (..., 3, H, W) in [-1, 1] on the colour
    wheel: hue = direction, saturation = magnitude / ``max_magnitude`` (clipped at 1); no motion is white. SAVi
    reconstructs this picture when its target is optical flow (Kipf et al., ICLR 2022, section 4)."""
    dy, dx = flow.unbind(dim=-3)
    hue = (torch.atan2(-dy, -dx) / torch.pi + 1) * 3  # [0, 6)
    sat = (torch.sqrt(dy * dy + dx * dx) / max_magnitude).clamp(max=1.0)
    channels = []
    for offset in (5.0, 3.0, 1.0):  # HSV -> RGB with value 1: 1 - s * clamp(min(k, 4 - k), 0, 1), k = (n + h) mod 6
        k = (offset + hue) % 6
        channels.append(1 - sat * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, dim=-3) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# In-memory split


@dataclass
class VideoSet:
    """A video split: ``video`` uint8 (N, F, H, W, 3), ``labels`` uint8 (N, F, H, W), and either ``motion``
    (N, F, G, 2) per object or ``flow`` (N, F, H, W, 2) per pixel (or neither). Arrays may be memory-mapped.

    ``clip_length`` L > 0 serves every window of L consecutive frames as one item (N * (F - L + 1) items; for
    training); 0 serves whole videos (N items; for evaluation).
    """

    video: np.ndarray
    labels: np.ndarray
    num_objects: int
    motion: np.ndarray | None = None
    flow: np.ndarray | None = None
    clip_length: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.video) == 0:
            raise ValueError(f"video dataset {self.name or '?'} is empty; expected at least one video")
        if self.video.ndim != 5 or self.video.shape[-1] != 3 or self.video.dtype != np.uint8:
            raise ValueError(f"video dataset {self.name}: 'video' must be uint8 (N, F, H, W, 3), got "
                             f"{self.video.dtype} {self.video.shape}")
        if self.labels.shape != self.video.shape[:4]:
            raise ValueError(f"video dataset {self.name}: 'labels' must be {self.video.shape[:4]}, got "
                             f"{self.labels.shape}")
        F = self.num_frames
        if not 0 <= self.clip_length <= F:
            raise ValueError(f"video dataset {self.name}: clip_length={self.clip_length} must be between 1 and the "
                             f"{F} frames of a video (or 0 for whole videos)")
        self.windows = F - self.clip_length + 1 if self.clip_length else 1

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.video.shape[-2])

    def __len__(self) -> int:
        return len(self.video) * self.windows

    def batch(self, index: Tensor | slice) -> dict[str, Tensor]:
        """The items at ``index`` (see the module docstring for the keys and shapes)."""
        items = torch.arange(len(self))[index]
        videos, starts = (items // self.windows).numpy(), (items % self.windows).numpy()
        L = self.clip_length or self.num_frames
        frames = starts[:, None] + np.arange(L)  # (B, L)
        order = np.argsort(videos, kind="stable")  # memory maps read faster in file order
        inverse = np.argsort(order)
        pick = lambda a: np.asarray(a[videos[order]])[np.arange(len(order))[:, None], frames[order]][inverse]  # noqa: E731
        video = torch.from_numpy(pick(self.video)).permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0)
        labels = torch.from_numpy(pick(self.labels)).long()  # (B, L, H, W)
        out = {"video": video, "masks": torch.nn.functional.one_hot(labels, self.num_objects)
               .permute(0, 1, 4, 2, 3).float()}
        if self.motion is not None:  # every pixel moves with the object it shows
            motion = torch.from_numpy(pick(self.motion)).float()  # (B, L, G, 2)
            flow = torch.gather(motion, 2, labels.flatten(2)[..., None].expand(-1, -1, -1, 2))  # (B, L, H*W, 2)
            out["flow"] = flow.transpose(2, 3).reshape(*labels.shape[:2], 2, *labels.shape[2:])
        elif self.flow is not None:
            out["flow"] = torch.from_numpy(pick(self.flow).astype(np.float32)).permute(0, 1, 4, 2, 3)
        out.update(first_frame_signals(labels[:, 0], self.num_objects))
        return out


# ---------------------------------------------------------------------------------------------------------------
# Cache


def write_video_cache(arrays: dict[str, np.ndarray], out_dir: str | os.PathLike, *, name: str, seed: int | None,
                      num_objects: int, extra: dict | None = None) -> Path:
    """Write ``arrays`` (``video``, ``labels`` and optional ``motion`` / ``flow`` / per-object signals) as a video
    cache directory; the directory appears complete or not at all."""
    out_dir = Path(out_dir)
    with _atomic_dir(out_dir) as tmp:
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(value), allow_pickle=False)
        _write_meta(tmp, _video_meta(arrays, name, seed, num_objects, extra))
    return out_dir


def _video_meta(arrays, name: str, seed: int | None, num_objects: int, extra: dict | None = None) -> dict:
    video = arrays["video"]
    return {"format_version": VIDEO_FORMAT_VERSION, "kind": "video", "name": name, "seed": seed,
            "num": int(video.shape[0]), "num_objects": int(num_objects), "num_frames": int(video.shape[1]),
            "image_size": [int(video.shape[2]), int(video.shape[3])], **(extra or {}),
            "arrays": {k: {"dtype": str(v.dtype), "shape": [int(s) for s in v.shape]} for k, v in arrays.items()}}


def load_video_cache(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Open a video cache as ({key: read-only memory-mapped array}, meta); clear errors for missing or corrupt
    files."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"video cache not found: {meta_path} (expected a directory written by slotlab)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt video cache metadata {meta_path}: {err}") from err
    if meta.get("kind") != "video" or meta.get("format_version") != VIDEO_FORMAT_VERSION:
        raise ValueError(f"{meta_path}: not a video cache of format {VIDEO_FORMAT_VERSION} (kind={meta.get('kind')!r},"
                         f" format_version={meta.get('format_version')!r})")
    arrays = {}
    for key, spec in meta["arrays"].items():
        file = path / f"{key}.npy"
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"corrupt or missing video cache array {file}: {err}") from err
        if str(array.dtype) != spec["dtype"] or list(array.shape) != spec["shape"]:
            raise ValueError(f"corrupt video cache array {file}: {array.dtype} {array.shape}, meta.json says "
                             f"{spec['dtype']} {tuple(spec['shape'])}")
        arrays[key] = array
    for key in ("video", "labels"):
        if key not in arrays:
            raise ValueError(f"video cache {path}: missing array {key!r}")
    return arrays, meta


def video_cache_dir(name: str, num: int, seed: int, num_frames: int, resolution: int,
                    cache_root: str | os.PathLike) -> Path:
    return Path(cache_root) / f"{name}-seed{seed}-n{num}-f{num_frames}-r{resolution}"


def get_or_create_video(name: str, num: int, seed: int, num_frames: int, cache_root: str | os.PathLike,
                        resolution: int = 64) -> Path:
    """The cache of videos 0..num-1 of the built-in generator ``name``, generated (chunk by chunk) if needed."""
    if name not in VIDEO_GENERATORS:
        raise ValueError(f"unknown built-in video dataset {name!r}; expected one of {sorted(VIDEO_GENERATORS)}")
    generator, num_objects = VIDEO_GENERATORS[name]
    path = video_cache_dir(name, num, seed, num_frames, resolution, cache_root)
    try:
        _, meta = load_video_cache(path)
        if (meta["name"], meta["seed"], meta["num"], meta["num_frames"], meta["image_size"]) == \
                (name, seed, num, num_frames, [resolution, resolution]):
            return path
    except (OSError, ValueError, KeyError):
        pass
    with _atomic_dir(path) as tmp:
        outputs: dict[str, np.ndarray] = {}
        for lo in range(0, num, _CHUNK):
            part = generator(min(_CHUNK, num - lo), seed, start=lo, num_frames=num_frames, resolution=resolution)
            part = {"video": part["video"], "labels": part["labels"], "motion": part["motion"]}
            if not outputs:
                outputs = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", "w+", v.dtype, (num, *v.shape[1:]))
                           for k, v in part.items()}
            for key, value in part.items():
                outputs[key][lo:lo + len(value)] = value
        for array in outputs.values():
            array.flush()
        _write_meta(tmp, _video_meta(outputs, name, seed, num_objects))
        del outputs
        if path.exists() and (path / "meta.json").is_file():  # another process finished it meanwhile: keep theirs
            shutil.rmtree(tmp)
    return path


def build_video_splits(cfg, cache_root: str | os.PathLike | None = None) -> dict[str, VideoSet]:
    """Train / val / test video splits of ``cfg`` (a DataConfig): train serves clips of ``cfg.clip_length`` frames,
    val and test whole videos. Built-in generators cut one stream into disjoint ranges (as the image datasets);
    ``cfg.path`` (with ``name="movi"``) reads a converted MOVi cache directory holding ``train`` and ``validation``
    (val = the first ``val_size`` validation videos, test = the next ``test_size``)."""
    from slotlab.data import default_cache_root

    for key in ("train_size", "val_size", "test_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"data.{key} must be >= 1, got {getattr(cfg, key)} (empty dataset)")
    if cfg.clip_length < 1:
        raise ValueError(f"data.clip_length must be >= 1 frame (the conditioning reads the clip's first frame), "
                         f"got {cfg.clip_length}")
    if cfg.name == "movi":
        return _movi_splits(cfg)
    if cfg.name not in VIDEO_GENERATORS:
        raise ValueError(f"data.name={cfg.name!r} is not a video dataset; expected one of "
                         f"{sorted(VIDEO_GENERATORS) + ['movi']}")
    if cfg.clip_length > cfg.num_frames:
        raise ValueError(f"data.clip_length={cfg.clip_length} is longer than the videos (data.num_frames="
                         f"{cfg.num_frames})")
    total = cfg.train_size + cfg.val_size + cfg.test_size
    root = Path(cfg.cache_dir) if cfg.cache_dir else Path(cache_root or default_cache_root())
    arrays, meta = load_video_cache(get_or_create_video(cfg.name, total, cfg.seed, cfg.num_frames, root,
                                                              cfg.resolution))
    G = meta["num_objects"]
    a, b = cfg.train_size, cfg.train_size + cfg.val_size

    def cut(lo: int, hi: int, clip: int, split: str) -> VideoSet:
        return VideoSet(arrays["video"][lo:hi], arrays["labels"][lo:hi], G, motion=arrays["motion"][lo:hi],
                        clip_length=clip, name=f"{cfg.name}/{split}")

    return {"train": cut(0, a, cfg.clip_length, "train"), "val": cut(a, b, 0, "val"), "test": cut(b, total, 0, "test")}


def _movi_splits(cfg) -> dict[str, VideoSet]:
    if not cfg.path:
        raise ValueError("data.name='movi' needs data.path=<directory made by `slotlab data convert-movi`>")
    root = Path(cfg.path)

    def load(split: str, lo: int, hi: int, clip: int, label: str) -> VideoSet:
        arrays, meta = load_video_cache(root / split)
        if hi > meta["num"]:
            raise ValueError(f"{root / split} holds {meta['num']} videos; data sizes need {hi}")
        if clip > meta["num_frames"]:
            raise ValueError(f"data.clip_length={clip} is longer than the {meta['num_frames']}-frame videos")
        flow = arrays["flow"][lo:hi] if "flow" in arrays else None
        return VideoSet(arrays["video"][lo:hi], arrays["labels"][lo:hi], meta["num_objects"], flow=flow,
                        clip_length=clip, name=f"movi/{label}")

    v = cfg.val_size
    return {"train": load("train", 0, cfg.train_size, cfg.clip_length, "train"),
            "val": load("validation", 0, v, 0, "val"), "test": load("validation", v, v + cfg.test_size, 0, "test")}
