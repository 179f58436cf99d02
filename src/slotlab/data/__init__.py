"""Datasets: built-in generators (no download), their on-disk cache, and the item contract.

Item contract (every dataset in slotlab; see docs/datasets_builtin.md):
- ``image``: float32 (3, H, W) in [-1, 1], RGB;
- ``masks``: float32 (G, H, W) one-hot, index 0 = background, absent objects all-zero;
- ``visibility``: float32 (G,); per-object factors float32 (G,) or (G, C) with the official field names.

For training, :class:`SceneSet` holds a split as uint8 tensors in memory and assembles whole batches at once
(much faster than per-item collation for small images).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from slotlab.data.cache import GENERATORS, CachedDataset, get_or_create, load_cache, read_meta, write_cache
from slotlab.data.multi_dsprites import generate_multi_dsprites
from slotlab.data.tetrominoes import generate_tetrominoes

__all__ = [
    "CachedDataset", "SceneSet", "SetScenes", "build_set_splits", "build_splits", "default_cache_root",
    "generate_multi_dsprites", "generate_tetrominoes", "get_or_create", "load_cache", "read_meta", "write_cache",
]


def default_cache_root() -> Path:
    return Path(os.environ.get("SLOTLAB_CACHE", Path.home() / ".cache" / "slotlab"))


@dataclass
class SceneSet:
    """A split held in memory: ``images`` uint8 (N, 3, H, W), ``labels`` uint8 (N, H, W), ``num_objects`` G.

    Labels below ``num_background`` are background (1; Objects Room: 4), which FG-ARI and mBO leave out.
    """

    images: Tensor
    labels: Tensor
    num_objects: int
    name: str = ""
    num_background: int = 1

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise ValueError(f"dataset {self.name or '?'} is empty; expected at least one scene")

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], num_objects: int, name: str = "",
                    start: int = 0, stop: int | None = None, num_background: int = 1) -> SceneSet:
        images = torch.from_numpy(np.array(arrays["image"][start:stop])).permute(0, 3, 1, 2)
        labels = torch.from_numpy(np.array(arrays["labels"][start:stop]))
        return cls(images.contiguous(), labels, num_objects, name, num_background)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, index: Tensor | slice, with_masks: bool = True) -> dict[str, Tensor]:
        """``image`` float32 (B, 3, H, W) in [-1, 1] and, if asked, ``masks`` float32 (B, G, H, W) one-hot."""
        out = {"image": self.images[index].float().div_(127.5).sub_(1.0)}
        if with_masks:
            labels = self.labels[index].long()  # (B, H, W)
            out["masks"] = torch.nn.functional.one_hot(labels, self.num_objects).permute(0, 3, 1, 2).float()
        return out


def build_splits(cfg, cache_root: str | os.PathLike | None = None) -> dict[str, SceneSet]:
    """Generate (or reuse) the built-in dataset of ``cfg`` (a DataConfig) and cut it into train / val / test.

    Scenes [0, train) train, [train, train + val) validation, then test: disjoint, deterministic from the seed.
    """
    if cfg.name not in GENERATORS:
        raise ValueError(
            f"data.name={cfg.name!r} is not a built-in dataset (expected one of {sorted(GENERATORS)}); "
            "real datasets are read with --data KIND:PATH"
        )
    for key in ("train_size", "val_size", "test_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"data.{key} must be >= 1, got {getattr(cfg, key)} (empty dataset)")
    total = cfg.train_size + cfg.val_size + cfg.test_size
    root = Path(cfg.cache_dir) if cfg.cache_dir else Path(cache_root or default_cache_root())
    path = get_or_create(cfg.name, total, cfg.seed, root)
    arrays = load_cache(path)
    G = GENERATORS[cfg.name][1]
    a, b = cfg.train_size, cfg.train_size + cfg.val_size
    return {
        "train": SceneSet.from_arrays(arrays, G, f"{cfg.name}/train", 0, a),
        "val": SceneSet.from_arrays(arrays, G, f"{cfg.name}/val", a, b),
        "test": SceneSet.from_arrays(arrays, G, f"{cfg.name}/test", b, total),
    }


@dataclass
class SetScenes:
    """A set-prediction split in memory: ``images`` uint8 (N, 3, H, W), ``targets`` float32 (N, M, P) in the
    layout named ``layout`` (``slotlab.set_layout``), padding rows all zero."""

    images: Tensor
    targets: Tensor
    layout: str
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise ValueError(f"dataset {self.name or '?'} is empty; expected at least one scene")
        if len(self.targets) != len(self.images):
            raise ValueError(f"dataset {self.name}: {len(self.images)} images but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, index: Tensor | slice) -> dict[str, Tensor]:
        """``image`` float32 (B, 3, H, W) in [-1, 1] and ``target`` float32 (B, M, P)."""
        return {"image": self.images[index].float().div_(127.5).sub_(1.0), "target": self.targets[index]}


def build_set_splits(cfg, cache_root: str | os.PathLike | None = None) -> dict[str, SetScenes]:
    """Train / val / test set-prediction splits of ``cfg`` (a DataConfig).

    - ``sprites_set`` (built-in): scenes [0, train) train, then val, then test, as :func:`build_splits`;
    - ``clevr`` (``cfg.path`` = the CLEVR_v1.0 directory): train = the first ``train_size`` scenes of CLEVR's train
      split; val and test = consecutive ranges of CLEVR's validation split (CLEVR's test split has no scenes).
    """
    for key in ("train_size", "val_size", "test_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"data.{key} must be >= 1, got {getattr(cfg, key)} (empty dataset)")
    if cfg.name == "sprites_set":
        from slotlab.data.sprites_set import set_targets

        total = cfg.train_size + cfg.val_size + cfg.test_size
        root = Path(cfg.cache_dir) if cfg.cache_dir else Path(cache_root or default_cache_root())
        arrays = load_cache(get_or_create(cfg.name, total, cfg.seed, root))
        images = torch.from_numpy(np.array(arrays["image"])).permute(0, 3, 1, 2).contiguous()
        targets = torch.from_numpy(set_targets(arrays))
        a, b = cfg.train_size, cfg.train_size + cfg.val_size
        return {split: SetScenes(images[lo:hi], targets[lo:hi], "sprites", f"{cfg.name}/{split}")
                for split, lo, hi in (("train", 0, a), ("val", a, b), ("test", b, total))}
    if cfg.name == "clevr":
        if not cfg.path:
            raise ValueError("data.name='clevr' needs data.path=/path/to/CLEVR_v1.0 (e.g. --set data.path=...)")
        from slotlab.data.clevr import read_clevr

        def load(split: str, lo: int, hi: int, label: str) -> SetScenes:
            arrays = read_clevr(cfg.path, split, lo, hi)
            images = torch.from_numpy(np.ascontiguousarray(arrays["image"])).permute(0, 3, 1, 2).contiguous()
            return SetScenes(images, torch.from_numpy(arrays["target"]), "clevr", f"clevr/{label}")

        v = cfg.val_size
        return {"train": load("train", 0, cfg.train_size, "train"), "val": load("val", 0, v, "val"),
                "test": load("val", v, v + cfg.test_size, "test")}
    raise ValueError(f"data.name={cfg.name!r} is not a set-prediction dataset; expected 'sprites_set' or 'clevr'")
