"""A folder of your own images as a slotlab split: ``--data folder:DIR[@train|@val|@test|@A:B]`` (docs/your_data.md).

- Files: every format Pillow opens (by extension), found recursively under DIR, in sorted order of their paths
  relative to DIR; hidden files and the ``DIR/masks/`` sub-folder are left out. Images are converted to RGB and
  fitted to the model's resolution by ``slotlab.data.imageio`` (``data.resize=crop|pad|stretch``).
- Splits: sub-folders ``train/``, ``val/``, ``test/`` of DIR (or of ``DIR/images/``) when they exist; otherwise
  training holds out the last 10% (at most 500) of the sorted files for validation. ``folder:DIR`` alone, for
  ``eval``, is every image under DIR.
- Masks (optional; for FG-ARI / ARI / mBO): for the image ``DIR/REL/STEM.EXT`` either ``DIR/masks/REL/STEM.png``, a
  single-channel 8-bit PNG of the image's size with 0 = background and 1..n the objects, or the per-object layout
  of CLEVR-with-masks exports, ``DIR/masks/REL/STEM_J.png`` (J = 0 the background, 1.. the objects; 0 / 255;
  a leading ``images/`` of REL may be left out), or ``X_mask_I_J.png`` beside ``X_image_I.png`` (then not listed
  as images). The CLEVR exports write their images with OpenCV, so the images of a folder with per-object masks
  are read as BGR.
- Streaming: a split holds only the list of file names; images are decoded when a batch is asked for.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from slotlab.data.imageio import (
    RESIZE_MODES,
    ImageReadError,
    fit_image,
    fit_labels,
    image_extensions,
    read_label_png,
    read_rgb,
)

MASKS_DIR = "masks"
SPLIT_NAMES = ("train", "val", "test")
_RANGE = re.compile(r"@(\d*):(\d*)$")
_NAMED = re.compile(r"@(train|val|test)$")


def list_images(directory: str | Path, root: str | Path | None = None) -> list[str]:
    """Image files under ``directory`` as POSIX paths relative to ``root`` (default: ``directory``), sorted;
    ``root/masks/`` and hidden files are skipped. Clear errors for a missing, empty or image-less folder."""
    directory = Path(directory)
    root = Path(root) if root is not None else directory
    if not directory.is_dir():
        kind = "a file" if directory.exists() else "not found"
        raise FileNotFoundError(f"{directory}: {kind}; expected a folder of images")
    extensions = image_extensions()
    masks = (root / MASKS_DIR).resolve()
    images: list[str] = []  # relative POSIX paths as plain strings: a million of them cost ~100 MB
    others: list[str] = []
    for parent, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".") and (Path(parent) / d).resolve() != masks]
        rel_parent = Path(os.path.relpath(parent, root)).as_posix()
        prefix = "" if rel_parent == "." else rel_parent + "/"
        for name in files:
            if not name.startswith("."):
                (images if os.path.splitext(name)[1].lower() in extensions else others).append(prefix + name)
    if not images and not others:
        raise ValueError(f"{directory}: empty folder; expected image files (PNG, JPEG, ... anything Pillow reads)")
    if not images:
        raise ValueError(f"{directory}: no image files among its {len(others)} files (e.g. {others[0]}); "
                         "expected PNG, JPEG, ... (anything Pillow reads)")
    images = _drop_object_masks(images)
    images.sort()
    return images


_OBJECT_MASK = re.compile(r"^(?P<prefix>.*)_mask_(?P<index>\d+)_\d+\.png$", re.IGNORECASE)


def _drop_object_masks(files: list[str]) -> list[str]:
    """Leave out the per-object masks kept beside their images (``X_mask_I_J.png`` next to ``X_image_I.EXT``)."""
    stems = {f.rsplit(".", 1)[0] for f in files}
    kept = []
    for f in files:
        match = _OBJECT_MASK.match(f)
        if not (match and f"{match['prefix']}_image_{match['index']}" in stems):
            kept.append(f)
    return kept


def _split_dir(root: Path, split: str) -> Path | None:
    for parent in (root, root / "images"):
        if (parent / split).is_dir():
            return parent / split
    return None


class FolderScenes:
    """A split of image files under ``root``, decoded per batch (the item contract of slotlab.data).

    ``files``: POSIX paths relative to ``root``. ``batch`` returns ``image`` float32 (B, 3, R, R) in [-1, 1] and,
    when the folder has masks and ``with_masks``, ``masks`` float32 (B, G, R, R) one-hot with G = the batch's
    largest label + 1 (label 0 = background; padding of ``resize=pad`` is background too).
    """

    num_background = 1

    def __init__(self, root: str | Path, files: list[str], resolution: int, resize: str = "crop",
                 name: str = "") -> None:
        if not files:
            raise ValueError(f"{name or root}: no images in this split")
        if resize not in RESIZE_MODES:
            raise ValueError(f"data.resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
        self.root, self.files, self.res, self.resize = Path(root), list(files), int(resolution), resize
        self.name = name or f"folder:{root}"
        self.mask_layout = self._mask_layout(self.files[0])  # "labels", "objects" or None (no masks)
        self.bgr = self.mask_layout == "objects"  # CLEVR-with-masks exports store their images BGR

    def __len__(self) -> int:
        return len(self.files)

    @property
    def resolution(self) -> int:
        return self.res

    @property
    def has_masks(self) -> bool:
        return self.mask_layout is not None

    def _mask_candidates(self, rel: str) -> tuple[Path, list[Path]]:
        """(the label-map PNG, the path prefixes P of per-object PNGs P_0.png, P_1.png, ...) of the image ``rel``:
        ``masks/REL/STEM`` (also without a leading ``images/``) and, for ``X_image_I``, ``X_mask_I`` beside it."""
        rel_path = Path(rel)
        stem = rel_path.stem
        base = self.root / MASKS_DIR / rel_path.parent
        prefixes = [base / stem]
        if rel_path.parts[0] == "images" and len(rel_path.parts) > 1:
            prefixes.append(self.root / MASKS_DIR / Path(*rel_path.parts[1:]).parent / stem)
        if "_image_" in stem:  # CLEVR-with-masks samples: X_image_I.png beside X_mask_I_J.png
            head, _, index = stem.rpartition("_image_")
            prefixes += [p.with_name(f"{head}_mask_{index}") for p in (*prefixes, self.root / rel_path)]
        return base / f"{stem}.png", prefixes

    def _mask_layout(self, rel: str) -> str | None:
        labels, prefixes = self._mask_candidates(rel)
        if labels.exists():
            return "labels"
        if any(p.with_name(p.name + "_0.png").is_file() for p in prefixes):
            return "objects"
        return None

    def read_labels(self, rel: str) -> np.ndarray:
        """The ground-truth label map uint8 (H, W) of the image ``rel`` at its own size."""
        labels, prefixes = self._mask_candidates(rel)
        if self.mask_layout == "labels":
            if not labels.exists():
                raise ImageReadError(f"{labels}: mask not found for {self.root / rel}; this folder has masks, "
                                     "so every image needs one (masks/REL/STEM.png)")
            return read_label_png(labels)
        prefix = next((p for p in prefixes if p.with_name(p.name + "_0.png").is_file()), None)
        if prefix is None:
            raise ImageReadError(f"{prefixes[0]}_0.png: per-object masks not found for {self.root / rel}")
        out, j = None, 0
        while (path := prefix.with_name(f"{prefix.name}_{j}.png")).exists():
            mask = read_label_png(path)
            out = np.zeros(mask.shape, np.uint8) if out is None else out
            if mask.shape != out.shape:
                raise ImageReadError(f"{path}: mask is {mask.shape[::-1]}, the other masks of {rel} "
                                     f"{out.shape[::-1]} (W, H)")
            out[mask > 127] = j
            j += 1
        return out

    def read(self, i: int, with_masks: bool = True) -> dict:
        """Scene ``i``: ``image`` uint8 (R, R, 3), ``labels`` uint8 (R, R) (when asked and present), ``fit``."""
        rel = self.files[i]
        rgb = read_rgb(self.root / rel)
        if self.bgr:
            rgb = np.ascontiguousarray(rgb[:, :, ::-1])
        image, f = fit_image(rgb, self.res, self.resize)
        item = {"image": image, "fit": f, "file": rel}
        if with_masks and self.has_masks:
            labels = self.read_labels(rel)
            if labels.shape != rgb.shape[:2]:
                raise ImageReadError(f"mask of {self.root / rel} is {labels.shape[1]}x{labels.shape[0]}, the image "
                                     f"{rgb.shape[1]}x{rgb.shape[0]} (W x H); expected the image's size")
            item["labels"] = fit_labels(labels, f)
        return item

    def batch(self, index: Tensor | slice, with_masks: bool = True) -> dict[str, Tensor]:
        indices = range(len(self))[index] if isinstance(index, slice) else [int(i) for i in index]
        items = [self.read(i, with_masks) for i in indices]
        images = torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2)  # (B, 3, R, R)
        out = {"image": images.float().div_(127.5).sub_(1.0)}
        if items and "labels" in items[0]:
            labels = torch.from_numpy(np.stack([it["labels"] for it in items])).long()  # (B, R, R)
            num = max(2, int(labels.max()) + 1)
            out["masks"] = torch.nn.functional.one_hot(labels, num).permute(0, 3, 1, 2).float()  # (B, G, R, R)
        return out


def parse_folder_spec(spec: str) -> tuple[Path, str | None, int, int | None]:
    """``folder:DIR[@train|@val|@test|@A:B]`` -> (DIR, split name or None, A, B)."""
    kind, sep, rest = spec.partition(":")
    if kind != "folder" or not rest:
        raise ValueError(f"data spec {spec!r}: expected folder:DIR[@train|@val|@test|@A:B]")
    split, start, stop = None, 0, None
    if (match := _RANGE.search(rest)) and not Path(rest).exists():
        rest = rest[: match.start()]
        start, stop = int(match.group(1) or 0), int(match.group(2)) if match.group(2) else None
        if stop is not None and stop <= start:
            raise ValueError(f"data spec {spec!r}: empty range [{start}, {stop}); expected A < B")
    elif (match := _NAMED.search(rest)) and not Path(rest).exists():
        rest, split = rest[: match.start()], match.group(1)
    return Path(rest), split, start, stop


def validation_count(num_files: int) -> int:
    """Files held out for validation when a folder has no ``val/``: the last 10%, at most 500, at least 1."""
    return min(500, max(1, math.ceil(num_files / 10)))


def _split_files(root: Path, split: str, pool: list[str] | None = None) -> list[str]:
    """The files of ``split`` under ``root``: its sub-folder; or, when there is no ``val/``, the held-out rule for
    train / val, applied to ``pool`` when given (one listing for both)."""
    if split == "test" or _split_dir(root, "val") is not None:
        folder = _split_dir(root, split)
        if folder is None:
            hint = f"use folder:{root} to score every image" if split == "test" else "add it, or remove val/"
            raise ValueError(f"{root}: no {split}/ sub-folder; {hint}")
        return list_images(folder, root)
    files = pool if pool is not None else _held_out_pool(root)
    if len(files) < 2:
        raise ValueError(f"{root}: {len(files)} image(s); training needs at least 2 (one is held out for validation)")
    n_val = validation_count(len(files))
    return files[:-n_val] if split == "train" else files[-n_val:]


def _held_out_pool(root: Path) -> list[str]:
    """The files the held-out rule splits: those of ``train/`` if there is one, else everything under root."""
    train_dir = _split_dir(root, "train")
    return list_images(train_dir, root) if train_dir is not None else list_images(root)


def folder_scenes(spec: str, resolution: int, resize: str = "crop") -> FolderScenes:
    """The split named by ``spec`` (``folder:DIR[@split|@A:B]``) at the model's resolution."""
    root, split, start, stop = parse_folder_spec(spec)
    files = _split_files(root, split) if split else list_images(root)
    if start or stop is not None:
        if start >= len(files) or (stop is not None and stop > len(files)):
            raise ValueError(f"{spec}: the folder holds {len(files)} images, so [{start}, {stop}) are not all there")
        files = files[start:stop]
    return FolderScenes(root, files, resolution, resize, name=spec)


def folder_training_splits(spec: str, resolution: int, resize: str = "crop",
                           val_spec: str | None = None) -> dict[str, FolderScenes]:
    """``train`` and ``val`` of ``slotlab train --data folder:DIR`` (``val``: ``val_spec`` when given)."""
    root, split, start, stop = parse_folder_spec(spec)
    ranged = bool(start or stop is not None)
    if ranged and val_spec is None:
        raise ValueError(f"--data {spec}: with a range, give the validation images too (--val-data folder:DIR@A:B)")
    pool = None
    if split or ranged:
        train = folder_scenes(spec, resolution, resize)
    else:
        if _split_dir(root, "val") is None:  # the held-out rule: one listing for train and val
            pool = _held_out_pool(root)
        train = FolderScenes(root, _split_files(root, "train", pool), resolution, resize, name=f"{spec}@train")
    if val_spec is not None:
        from slotlab.data.specs import load_scenes

        val = folder_scenes(val_spec, resolution, resize) if val_spec.startswith("folder:") else load_scenes(val_spec)
    else:
        val = FolderScenes(root, _split_files(root, "val", pool), resolution, resize, name=f"{spec}@val")
    return {"train": train, "val": val}
