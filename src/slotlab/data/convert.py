"""``slotlab data convert``: a TFRecord record range -> a slotlab cache directory (``.npy`` + ``meta.json``).

Training from the converted directory is bound by memory-mapped reads, not by GZIP + protobuf parsing. The format
is the one of the built-in cache (``slotlab.data.cache``, docs/datasets.md), after the kind's protocol (CLEVR:
cropped and resized to 128x128; clevr6: scenes with at most 6 objects), with extra ``meta.json`` keys::

    "seed": null                      not generated
    "start": A                        the first record converted
    "num_background": 1 | 4           leading label values that are background (Objects Room: 4)
    "source": {"file", "kind", "records": [A, B], "scenes_kept"}   B = one past the last record read

Scenes are gathered in chunks of ``chunk`` scenes (bounded memory), then joined into one .npy per array; the
directory appears atomically, complete or not at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slotlab.data.cache import _atomic_dir, _meta, _write_meta, load_cache
from slotlab.data.multi_object import get_layout, iter_scenes
from slotlab.data.tfrecord import TFRecordError

log = logging.getLogger(__name__)


def convert_tfrecord(kind: str, path: str | Path, out: str | Path, start: int = 0, stop: int | None = None,
                     progress: bool = True, chunk: int = 1024) -> Path:
    """Convert records [start, stop) of the ``kind`` file ``path`` into a cache directory ``out``; return it."""
    layout, out = get_layout(kind), Path(out)
    with _atomic_dir(out) as tmp:
        parts: list[dict[str, Path]] = []
        buffer: list[dict[str, np.ndarray]] = []
        last = start - 1
        bar = tqdm(total=None if stop is None else stop - start, unit="record", disable=not progress,
                   desc=f"convert {kind}", dynamic_ncols=True)
        try:
            for index, scene in iter_scenes(kind, path, start, stop):
                bar.update(index - last)
                last = index
                buffer.append(scene)
                if len(buffer) == chunk:
                    parts.append(_write_part(tmp, len(parts), buffer))
                    buffer = []
        finally:
            bar.close()
        if buffer:
            parts.append(_write_part(tmp, len(parts), buffer))
        if not parts:
            raise TFRecordError(f"{path}: no scenes of {kind} in records [{start}, {stop}) (all filtered out)")
        arrays = _join_parts(tmp, parts)
        meta = _meta(arrays, name=kind, seed=0, start=start, num_objects=layout.num_masks)
        records_end = stop if stop is not None else last + 1
        meta.update(seed=None, num_background=layout.num_background,
                    source={"file": str(Path(path).resolve()), "kind": kind, "records": [start, records_end],
                            "scenes_kept": int(len(arrays["image"]))})
        del arrays
        _write_meta(tmp, meta)
    load_cache(out)  # check what we wrote
    log.info("converted %s records [%d, %d) of %s -> %s", kind, start, records_end, path, out)
    return out


def _write_part(directory: Path, number: int, scenes: list[dict[str, np.ndarray]]) -> dict[str, Path]:
    files = {}
    for key in scenes[0]:
        files[key] = directory / f".part{number:05d}-{key}.npy"
        np.save(files[key], np.stack([s[key] for s in scenes]), allow_pickle=False)
    return files


def _join_parts(directory: Path, parts: list[dict[str, Path]]) -> dict[str, np.ndarray]:
    """Concatenate the part files of each array into ``<key>.npy`` (memory-mapped) and delete the parts."""
    arrays = {}
    for key in parts[0]:
        pieces = [np.load(p[key], mmap_mode="r") for p in parts]
        total = sum(len(p) for p in pieces)
        shape = (total, *pieces[0].shape[1:])
        joined = np.lib.format.open_memmap(directory / f"{key}.npy", "w+", pieces[0].dtype, shape)
        offset = 0
        for piece in pieces:
            joined[offset : offset + len(piece)] = piece
            offset += len(piece)
        joined.flush()
        arrays[key] = joined
        del pieces
        for p in parts:
            p[key].unlink()
    return arrays
