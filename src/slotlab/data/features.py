"""Frozen-backbone features for the features task (DINOSAUR): computed once per dataset and stored on disk.

A *source* is a dataset of images with evaluation targets (:class:`SceneSource` for the built-in scenes, COCO and
VOC in :mod:`slotlab.data.coco` / :mod:`slotlab.data.voc`); it provides

- ``images(index)`` -> uint8 (B, 3, R, R) RGB, R = the model's resolution;
- ``targets(index)`` -> ``instances`` and ``classes``, int16 (B, S, S) label maps at the metric resolution S:
  0 = background, 1.. = an object (an instance, or a category), -1 = ignored (overlaps, VOC's 255 border);
- ``key``: a string naming the images exactly (dataset, split, range, resolution), for the cache.

:class:`FeatureSplit` serves training batches ``{"features": float32 (B, N, C)}``: read from the cache, a
memory-mapped ``features.npy`` (N items x patches x C, fp16 by default, fp32 on request), or computed by the
backbone on the fly (``data.feature_cache="none"``). The cache directory's name hashes the source key and the
backbone (architecture, block, weights' fingerprint), so a change of either builds a new cache; it is written to
a temporary directory and renamed into place, so an interrupted build leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

CACHE_DTYPES = {"fp16": np.float16, "fp32": np.float32}


class SceneSource:
    """Built-in scenes (a :class:`slotlab.data.SceneSet`) as a feature source: every object is its own instance
    and class (the built-in scenes have no categories), metrics at the scenes' own resolution."""

    def __init__(self, scenes, key: str) -> None:
        self.scenes, self.key, self.name = scenes, key, scenes.name
        self.resolution = scenes.resolution

    def __len__(self) -> int:
        return len(self.scenes)

    def images(self, index) -> Tensor:
        return self.scenes.images[index]

    def targets(self, index) -> dict[str, Tensor]:
        labels = self.scenes.labels[index].to(torch.int16)  # (B, H, W), 0 = background
        labels = torch.where(labels < self.scenes.num_background, 0, labels - self.scenes.num_background + 1)
        return {"instances": labels, "classes": labels}


class FolderSource:
    """A folder of your own images (:mod:`slotlab.data.folder`, ``--data folder:DIR``) as a feature source: the
    images fitted to the resolution by ``data.resize``; targets from the folder's masks when it has them (each
    object its own instance and class), else all background, so that only the feature MSE is measured."""

    def __init__(self, scenes) -> None:
        self.scenes, self.name, self.resolution = scenes, scenes.name, scenes.resolution
        files = hashlib.sha256("\n".join(scenes.files).encode()).hexdigest()[:16]
        self.key = f"folder:{Path(scenes.root).resolve()}:{files}:{len(scenes)}:{scenes.resolution}:{scenes.resize}"

    def __len__(self) -> int:
        return len(self.scenes)

    def images(self, index) -> Tensor:
        image = self.scenes.batch(index, with_masks=False)["image"]  # (B, 3, R, R) in [-1, 1], from uint8
        return (image + 1).mul_(127.5).round_().to(torch.uint8)

    def targets(self, index) -> dict[str, Tensor]:
        batch = self.scenes.batch(index, with_masks=True)
        if "masks" not in batch:
            labels = torch.zeros(batch["image"].shape[0], self.resolution, self.resolution, dtype=torch.int16)
        else:
            labels = batch["masks"].argmax(dim=1).to(torch.int16)  # (B, R, R), 0 = background
        return {"instances": labels, "classes": labels}


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1] (slotlab's image contract)."""
    return images.float().div_(127.5).sub_(1.0)


@torch.no_grad()
def compute_features(backbone, images: Tensor) -> Tensor:
    """uint8 (B, 3, R, R) -> float32 (B, N, C) on the CPU, the backbone run on its own device."""
    device = next(backbone.buffers()).device
    return backbone(to_unit_range(images).to(device)).float().cpu()


def cache_dir(root: Path, source, backbone, dtype: str) -> Path:
    """Where the features of ``source`` under ``backbone`` in ``dtype`` live (a hash of everything they depend on)."""
    ident = json.dumps({"source": source.key, "backbone": backbone.name, "block": backbone.block,
                        "weights": backbone.fingerprint, "dtype": dtype})
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return Path(root) / "features" / f"{backbone.name}-b{backbone.block}-{dtype}-{digest}"


def build_cache(source, backbone, root: Path, dtype: str = "fp16", batch_size: int = 64,
                progress: bool | None = None) -> Path:
    """Compute and store the features of every item of ``source`` (reused when they exist); return the directory."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"data.feature_cache must be one of {sorted(CACHE_DTYPES)} or 'none', got {dtype!r}")
    path = cache_dir(root, source, backbone, dtype)
    if (path / "meta.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        n = len(source)
        first = compute_features(backbone, source.images(slice(0, min(batch_size, n))))
        shape = (n, *first.shape[1:])  # (items, N, C)
        out = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=CACHE_DTYPES[dtype], shape=shape)
        from tqdm import tqdm

        steps = range(0, n, batch_size)
        hide = None if progress is None else not progress  # None: a progress bar on a terminal only
        for start in tqdm(steps, desc=f"caching {source.name} features", disable=hide):
            stop = min(start + batch_size, n)
            feats = first if start == 0 else compute_features(backbone, source.images(slice(start, stop)))
            out[start:stop] = feats.numpy().astype(CACHE_DTYPES[dtype])
        out.flush()
        del out
        meta = {"source": source.key, "backbone": backbone.name, "block": backbone.block,
                "weights": backbone.fingerprint, "dtype": dtype, "shape": list(shape)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %d x %s features of %s in %s", shape[0], shape[1:], source.name, path)
    return path


class FeatureSplit:
    """A split of the features task: batches of cached (or on-the-fly) backbone features and, for evaluation,
    the images' targets. ``features`` is the memory-mapped cache, or None to run ``backbone`` on every batch."""

    def __init__(self, source, backbone, features: np.ndarray | None = None) -> None:
        if len(source) == 0:
            raise ValueError(f"dataset {source.name} is empty; expected at least one image")
        if features is not None and len(features) != len(source):
            raise ValueError(f"feature cache holds {len(features)} items but {source.name} has {len(source)}")
        self.source, self.backbone, self.cached = source, backbone, features
        self.name, self.resolution = source.name, source.resolution

    def __len__(self) -> int:
        return len(self.source)

    def features(self, index) -> Tensor:
        """float32 (B, N, C) features of the items ``index`` (a slice or an index tensor)."""
        if self.cached is None:
            return compute_features(self.backbone, self.source.images(index))
        rows = self.cached[index] if isinstance(index, slice) else self.cached[np.asarray(index)]
        return torch.from_numpy(np.array(rows, dtype=np.float32))  # a copy: the cache stays read-only

    def batch(self, index, with_targets: bool = False) -> dict[str, Tensor]:
        out = {"features": self.features(index)}
        if with_targets:
            out.update(self.source.targets(index))
        return out


def feature_split(source, backbone, dtype: str, root: Path, progress: bool | None = None) -> FeatureSplit:
    """A :class:`FeatureSplit` of ``source``: cached in ``dtype`` ("fp16" / "fp32") under ``root``, or "none"."""
    if dtype == "none":
        return FeatureSplit(source, backbone)
    path = build_cache(source, backbone, root, dtype, progress=progress)
    return FeatureSplit(source, backbone, np.load(path / "features.npy", mmap_mode="r"))


def photo_sources(cfg, resolution: int) -> dict:
    """COCO / VOC / image-folder train, val and test sources of ``cfg`` (a DataConfig with ``name`` and ``path``).

    COCO: train = the first ``train_size`` images of train2017, val = the next ``val_size`` (checkpoint
    selection), test = the first ``test_size`` images of val2017 (the official evaluation set: all 5,000).
    VOC: train = trainaug (or train), val = the first ``val_size`` images of val, test = the first ``test_size``
    of val (the official evaluation set: all 1,449; VOC has no other masked images to select checkpoints on).
    """
    if not cfg.path:
        raise ValueError(f"data.name={cfg.name!r} needs the dataset folder: --data {cfg.name}:DIR (or data.path)")
    if cfg.name == "folder":  # train / val as `--data folder:DIR`; test: its test/ sub-folder, else val
        from slotlab.data.folder import folder_scenes, folder_training_splits

        spec = f"folder:{cfg.path}"
        splits = folder_training_splits(spec, resolution, cfg.resize)
        has_test = (Path(cfg.path) / "test").is_dir() or (Path(cfg.path) / "images" / "test").is_dir()
        splits["test"] = folder_scenes(f"{spec}@test", resolution, cfg.resize) if has_test else splits["val"]
        return {split: FolderSource(scenes) for split, scenes in splits.items()}
    S, a, v, t = cfg.mask_size, cfg.train_size, cfg.val_size, cfg.test_size
    if cfg.name == "coco":
        from slotlab.data.coco import CocoSource

        return {"train": CocoSource(cfg.path, "train", resolution, S, 0, a),
                "val": CocoSource(cfg.path, "train", resolution, S, a, a + v),
                "test": CocoSource(cfg.path, "val", resolution, S, 0, t)}
    from slotlab.data.voc import VocSource

    return {"train": VocSource(cfg.path, "train", resolution, S, 0, a),
            "val": VocSource(cfg.path, "val", resolution, S, 0, v),
            "test": VocSource(cfg.path, "val", resolution, S, 0, t)}


def build_feature_splits(cfg, cache_root: str | os.PathLike | None = None, progress: bool | None = None) -> dict:
    """Train / val / test :class:`FeatureSplit` s of ``cfg`` (an ExperimentConfig): the images of ``cfg.data``
    (``coco`` or ``voc`` from ``data.path``, or a built-in dataset), the frozen backbone of ``cfg.model`` on
    ``cfg.train.device``, and the features cached under ``data.cache_dir`` (default ~/.cache/slotlab) in
    ``data.feature_cache``."""
    from slotlab.data import build_splits, default_cache_root
    from slotlab.distributed import resolve_device
    from slotlab.nn.backbone import FrozenBackbone

    m, d = cfg.model, cfg.data
    if d.feature_cache not in (*CACHE_DTYPES, "none"):
        raise ValueError(f"data.feature_cache must be 'fp16', 'fp32' or 'none', got {d.feature_cache!r}")
    backbone = FrozenBackbone(m.backbone, m.backbone_weights, m.resolution, m.backbone_block)  # weights first
    backbone.to(resolve_device(cfg.train.device))
    if d.name in ("coco", "voc", "folder"):
        sources = photo_sources(d, m.resolution)
    else:
        scenes = build_splits(d, cache_root)
        sources = {split: SceneSource(s, f"{d.name}:seed{d.seed}:{split}:{d.train_size}:{d.val_size}:{d.test_size}")
                   for split, s in scenes.items()}
    for split, source in sources.items():
        if len(source) == 0:
            raise ValueError(f"the {split} split of {d.name} is empty (data.{split}_size, or the folder {d.path})")
        if source.resolution != m.resolution:
            raise ValueError(f"{d.name} images are {source.resolution}px but model.resolution={m.resolution}")
    root = Path(d.cache_dir) if d.cache_dir else Path(cache_root or default_cache_root())
    return {split: feature_split(source, backbone, d.feature_cache, root, progress)
            for split, source in sources.items()}
