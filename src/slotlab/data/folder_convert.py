"""``slotlab data convert folder:DIR --out OUT --resolution R``: a folder of images -> a slotlab cache directory.

The images are converted and fitted to R x R once (``slotlab.data.imageio``), written straight into memory-mapped
``image.npy`` / ``labels.npy`` (bounded memory, one image at a time) with a progress bar, in the cache format of
``slotlab.data.cache``, plus ``files.txt`` (the source file of each item, in order) and in meta.json::

    "seed": null, "num_background": 1, "masks": true | false,
    "source": {"folder": DIR, "resize": "crop" | "pad" | "stretch", "files": N}

Without masks, ``labels`` is all 0 (background). The directory appears atomically, complete or not at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slotlab.data.cache import _atomic_dir, _meta, _write_meta, load_cache
from slotlab.data.folder import folder_scenes

log = logging.getLogger(__name__)
_CHUNK = 4096  # items per pass when counting which labels each scene holds


def convert_folder(spec: str, out: str | Path, resolution: int, resize: str = "crop", progress: bool = True) -> Path:
    """Convert the images of ``spec`` (``folder:DIR[@split|@A:B]``) into the cache directory ``out``; return it."""
    scenes = folder_scenes(spec, resolution, resize)
    out, num, R = Path(out), len(scenes), resolution
    with _atomic_dir(out) as tmp:
        images = np.lib.format.open_memmap(tmp / "image.npy", "w+", np.uint8, (num, R, R, 3))
        labels = np.lib.format.open_memmap(tmp / "labels.npy", "w+", np.uint8, (num, R, R))
        for i in tqdm(range(num), unit="image", disable=not progress, desc="convert folder", dynamic_ncols=True):
            item = scenes.read(i)
            images[i] = item["image"]
            labels[i] = item.get("labels", 0)
        num_objects = int(labels.max()) + 1
        visibility = np.zeros((num, num_objects), np.float32)
        for lo in range(0, num, _CHUNK):
            chunk = np.asarray(labels[lo : lo + _CHUNK]).reshape(-1, R * R)  # (n, R * R)
            for k in range(num_objects):
                visibility[lo : lo + len(chunk), k] = (chunk == k).any(axis=1)
        np.save(tmp / "visibility.npy", visibility)
        arrays = {"image": images, "labels": labels, "visibility": visibility}
        meta = _meta(arrays, name="folder", seed=0, start=0, num_objects=num_objects)
        images.flush()
        labels.flush()
        del images, labels, arrays
        meta.update(seed=None, num_background=1, masks=scenes.has_masks,
                    source={"folder": str(scenes.root.resolve()), "resize": resize, "files": num})
        _write_meta(tmp, meta)
        (tmp / "files.txt").write_text("".join(f + "\n" for f in scenes.files))
    load_cache(out)  # check what we wrote
    log.info("converted %d images of %s -> %s (%dx%d, resize=%s)", num, spec, out, R, R, resize)
    return out
