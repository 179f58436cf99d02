"""On-disk cache of generated datasets, and the Dataset that serves the slotlab item contract from it.

Format (version 1), one directory per dataset::

    <dir>/meta.json        {"format_version": 1, "name", "seed", "start", "num", "num_objects", "image_size",
                            "arrays": {key: {"dtype", "shape"}}}
    <dir>/image.npy        uint8   (N, H, W, 3)  RGB
    <dir>/labels.npy       uint8   (N, H, W)     per-pixel object index, 0 = background
    <dir>/visibility.npy   float32 (N, G)
    <dir>/<factor>.npy     float32 (N, G) or (N, G, C), row 0 = background

Directories converted from real files (``slotlab data convert``, slotlab.data.convert) add ``"num_background"``
(leading label values that are background; 1 when absent) and ``"source"`` to meta.json, with ``"seed": null``.

Directories are written under a temporary name next to the target and renamed into place, so a reader never sees
a half-written cache. Arrays are loaded memory-mapped, so a 60k-scene cache costs no RAM until items are read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from slotlab.data.multi_dsprites import NUM_OBJECTS as MULTI_DSPRITES_OBJECTS
from slotlab.data.multi_dsprites import generate_multi_dsprites
from slotlab.data.shapes import check_generation_args
from slotlab.data.sprites_set import NUM_OBJECTS as SPRITES_SET_OBJECTS
from slotlab.data.sprites_set import generate_sprites_set
from slotlab.data.tetrominoes import NUM_OBJECTS as TETROMINOES_OBJECTS
from slotlab.data.tetrominoes import generate_tetrominoes

FORMAT_VERSION = 1
META_FILE = "meta.json"
_GENERATION_CHUNK = 4096  # scenes generated and written at a time by get_or_create

# name -> (generator, G)
GENERATORS: dict[str, tuple[Callable[..., dict[str, np.ndarray]], int]] = {
    "tetrominoes": (generate_tetrominoes, TETROMINOES_OBJECTS),
    "multi_dsprites": (generate_multi_dsprites, MULTI_DSPRITES_OBJECTS),
    "sprites_set": (generate_sprites_set, SPRITES_SET_OBJECTS),
}


# ---------------------------------------------------------------------------------------------------------------
# Validation


def validate_arrays(arrays: Mapping[str, np.ndarray], where: str = "arrays") -> tuple[int, int]:
    """Check ``arrays`` against the cache/item contract and return (N, G); ValueError naming ``where`` otherwise.

    Requires ``image`` uint8 (N, H, W, 3), ``labels`` uint8 (N, H, W), ``visibility`` (N, G), and every other
    array (a per-object factor) shaped (N, G) or (N, G, C). N must be at least 1.
    """
    missing = [key for key in ("image", "labels", "visibility") if key not in arrays]
    if missing:
        raise ValueError(f"{where}: missing required arrays {missing} (have {sorted(arrays)})")
    image, labels, visibility = arrays["image"], arrays["labels"], arrays["visibility"]
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"{where}: 'image' must be uint8 (N, H, W, 3), got {image.dtype} {image.shape}")
    num = image.shape[0]
    if num == 0:
        raise ValueError(f"{where}: dataset is empty (0 items)")
    if labels.dtype != np.uint8 or labels.shape != image.shape[:3]:
        raise ValueError(f"{where}: 'labels' must be uint8 {image.shape[:3]}, got {labels.dtype} {labels.shape}")
    if visibility.ndim != 2 or visibility.shape[0] != num or visibility.shape[1] < 1:
        raise ValueError(f"{where}: 'visibility' must be (N={num}, G), got {visibility.shape}")
    num_objects = visibility.shape[1]
    for key, value in arrays.items():
        if key in ("image", "labels"):
            continue
        if value.ndim not in (2, 3) or value.shape[:2] != (num, num_objects):
            raise ValueError(f"{where}: factor {key!r} must be (N={num}, G={num_objects}[, C]), got {value.shape}")
    return num, num_objects


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _meta(arrays: Mapping[str, np.ndarray], *, name: str, seed: int, start: int, num_objects: int) -> dict:
    """The meta.json content describing ``arrays`` (anything with .dtype and .shape)."""
    image = arrays["image"]
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "seed": int(seed),
        "start": int(start),
        "num": int(image.shape[0]),
        "num_objects": int(num_objects),
        "image_size": [int(image.shape[1]), int(image.shape[2])],
        "arrays": {key: {"dtype": str(v.dtype), "shape": [int(s) for s in v.shape]} for key, v in arrays.items()},
    }


def _write_meta(directory: Path, meta: dict) -> None:
    with open(directory / META_FILE, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def _replace_dir(tmp: Path, final: Path, kind: str = "cache") -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing an existing ``final`` only if it is a slotlab
    cache (never a folder of anything else: the caller checks --out first, this is the last line of defence)."""
    try:
        os.rename(tmp, final)  # atomic; fails if final exists and is not empty
        return
    except OSError:
        if not final.exists():
            raise
    marker = META_FILE if kind == "cache" else "config.json"
    if not final.is_dir() or not (final / marker).is_file():
        raise FileExistsError(f"{final} exists and is not a slotlab {kind} directory; it was left untouched (the "
                              "new one was not written)")
    trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.rename(final, trash / final.name)
    os.rename(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _atomic_dir(final: Path, kind: str = "cache") -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``final``; on success move it to ``final``, on error delete it.
    A full disk or a read-only place raises :class:`~slotlab.rundir.WriteError` naming ``final``."""
    from slotlab.rundir import write_error

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as err:
        raise write_error(final, err) from err
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700); a finished cache should be readable like any dir
        yield tmp
        if tmp.exists():  # the body may have discarded it (see get_or_create)
            _replace_dir(tmp, final, kind)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if write_error(final, err) is err:
            raise
        raise write_error(final, err) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_cache(
    arrays: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike,
    *,
    name: str,
    seed: int,
    start: int,
    num_objects: int,
) -> Path:
    """Write ``arrays`` (a generator's output) as a cache directory at ``out_dir`` and return its path.

    The directory is built under a temporary name and renamed into place, so ``out_dir`` is either absent, the old
    cache, or the complete new one; an existing cache at ``out_dir`` is replaced.
    """
    out_dir = Path(out_dir)
    num, found_objects = validate_arrays(arrays, where=f"write_cache({out_dir})")
    if found_objects != num_objects:
        raise ValueError(f"write_cache({out_dir}): num_objects={num_objects} but arrays have G={found_objects}")
    with _atomic_dir(out_dir) as tmp:
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(value), allow_pickle=False)
        _write_meta(tmp, _meta(arrays, name=name, seed=seed, start=start, num_objects=num_objects))
    return out_dir


def _generate_into(directory: Path, name: str, num: int, seed: int) -> dict:
    """Generate scenes 0..num-1 of ``name`` chunk by chunk straight into .npy files; return the meta dict."""
    generator, num_objects = GENERATORS[name]
    outputs: dict[str, np.memmap] = {}
    for lo in range(0, num, _GENERATION_CHUNK):
        part = generator(min(_GENERATION_CHUNK, num - lo), seed, start=lo)
        if not outputs:
            outputs = {
                key: np.lib.format.open_memmap(directory / f"{key}.npy", "w+", v.dtype, (num, *v.shape[1:]))
                for key, v in part.items()
            }
        for key, value in part.items():
            outputs[key][lo : lo + len(value)] = value
    meta = _meta(outputs, name=name, seed=seed, start=0, num_objects=num_objects)
    for array in outputs.values():
        array.flush()
    return meta


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read_meta(path: str | os.PathLike) -> dict:
    """Read and check ``meta.json`` of the cache at ``path``.

    FileNotFoundError if the directory or meta.json is missing; ValueError if it is unreadable, of another format
    version, or describes an empty dataset.
    """
    path = Path(path)
    expected = f"expected a slotlab cache directory with {META_FILE} and one .npy per array"
    if not path.is_dir():
        raise FileNotFoundError(f"cache directory not found: {path} ({expected})")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"cache metadata not found: {meta_path} ({expected})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt cache metadata {meta_path}: {err}") from err
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_path}: unsupported cache format version {version!r}, expected {FORMAT_VERSION}")
    for key in ("name", "seed", "start", "num", "num_objects", "arrays"):
        if key not in meta:
            raise ValueError(f"corrupt cache metadata {meta_path}: missing field {key!r}")
    if meta["num"] < 1:
        raise ValueError(f"cache at {path} is empty (num={meta['num']}); expected at least one item")
    return meta


def _load_array(file: Path, spec: Mapping) -> np.ndarray:
    """Memory-map one .npy file and check it matches its meta.json entry."""
    if not file.is_file():
        raise FileNotFoundError(f"cache array missing: {file} (listed in {META_FILE})")
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"corrupt cache array {file}: {err}") from err
    if str(array.dtype) != spec.get("dtype") or list(array.shape) != list(spec.get("shape", [])):
        raise ValueError(
            f"corrupt cache array {file}: found {array.dtype} {array.shape}, "
            f"{META_FILE} says {spec.get('dtype')} {tuple(spec.get('shape', []))}"
        )
    return array


def load_cache(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Open the cache at ``path`` as {key: read-only memory-mapped array}.

    Raises FileNotFoundError if the directory, meta.json or a listed array is missing, and ValueError if anything
    is corrupt (unparsable, shapes/dtypes not as recorded, not the item contract) or the dataset is empty.
    """
    path = Path(path)
    meta = read_meta(path)
    arrays = {key: _load_array(path / f"{key}.npy", spec) for key, spec in meta["arrays"].items()}
    num, num_objects = validate_arrays(arrays, where=f"cache {path}")
    if num != meta["num"] or num_objects != meta["num_objects"]:
        raise ValueError(
            f"corrupt cache {path}: arrays hold N={num}, G={num_objects} but {META_FILE} says "
            f"num={meta['num']}, num_objects={meta['num_objects']}"
        )
    return arrays


class CachedDataset(Dataset):
    """Serve cached (or in-memory) generator output as slotlab items.

    Each item is a dict of tensors: ``image`` float32 (3, H, W) in [-1, 1]; ``masks`` float32 (G, H, W), the
    one-hot encoding of ``labels``; ``visibility`` float32 (G,); and every factor as float32 (G,) or (G, C).
    When built from a path, pickling (e.g. for spawn-started DataLoader workers) sends the path and re-opens the
    memory maps instead of copying the data.
    """

    def __init__(self, source: str | os.PathLike | Mapping[str, np.ndarray]) -> None:
        if isinstance(source, (str, os.PathLike)):
            self.path: Path | None = Path(source)
            self.arrays = load_cache(self.path)
        else:
            self.path = None
            self.arrays = dict(source)
        self.num_items, self.num_objects = validate_arrays(self.arrays, where=str(self.path or "arrays"))

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = int(index)
        if not -self.num_items <= i < self.num_items:
            raise IndexError(f"index {index} out of range for dataset of {self.num_items} items")
        image = torch.from_numpy(np.array(self.arrays["image"][i]))  # (H, W, 3) uint8
        labels = torch.from_numpy(np.array(self.arrays["labels"][i])).long()  # (H, W)
        if int(labels.max()) >= self.num_objects:
            raise ValueError(f"item {i}: label {int(labels.max())} >= G={self.num_objects} in {self.path or 'arrays'}")
        item = {
            "image": image.permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0,  # (3, H, W) in [-1, 1]
            "masks": torch.nn.functional.one_hot(labels, self.num_objects).permute(2, 0, 1).float(),  # (G, H, W)
        }
        for key, value in self.arrays.items():
            if key not in ("image", "labels"):
                item[key] = torch.from_numpy(np.array(value[i], dtype=np.float32))  # (G,) or (G, C)
        return item

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.path is not None:
            state["arrays"] = None  # re-opened from self.path on unpickling
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.arrays is None:
            self.arrays = load_cache(self.path)


# ---------------------------------------------------------------------------------------------------------------
# Generate-once helper


def cache_dir(name: str, num: int, seed: int, cache_root: str | os.PathLike) -> Path:
    """Where get_or_create keeps the cache of (name, num, seed): ``cache_root/f"{name}-seed{seed}-n{num}"``."""
    return Path(cache_root) / f"{name}-seed{seed}-n{num}"


def _matches(path: Path, name: str, num: int, seed: int) -> bool:
    """True if ``path`` holds a complete, loadable cache of scenes 0..num-1 of (name, seed)."""
    try:
        meta = read_meta(path)
        load_cache(path)
    except (OSError, ValueError):
        return False
    wanted = {"name": name, "seed": seed, "start": 0, "num": num, "num_objects": GENERATORS[name][1]}
    return all(meta.get(key) == value for key, value in wanted.items())


def get_or_create(name: str, num: int, seed: int, cache_root: str | os.PathLike) -> Path:
    """Return the cache directory of ``num`` scenes of dataset ``name`` with ``seed``, generating it if needed.

    ``name`` is "tetrominoes" or "multi_dsprites". An existing matching cache is reused; a missing, corrupt or
    mismatched one is (re)generated chunk by chunk (bounded memory) and moved into place atomically.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown built-in dataset {name!r}; expected one of {sorted(GENERATORS)}")
    num, seed, _ = check_generation_args(num, seed, 0)
    path = cache_dir(name, num, seed, cache_root)
    if _matches(path, name, num, seed):
        return path
    with _atomic_dir(path) as tmp:
        _write_meta(tmp, _generate_into(tmp, name, num, seed))
        if _matches(path, name, num, seed):  # another process finished the same cache meanwhile: keep theirs
            shutil.rmtree(tmp)
    return path
