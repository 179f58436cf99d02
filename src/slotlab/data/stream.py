"""Stream a multi_object_datasets TFRecord as slotlab items, sharded across DataLoader workers and DDP ranks.

A whole-file GZIP stream has no random access, so every shard decompresses the file up to ``stop``; a shard only
verifies the CRC of, parses and decodes its own records (record i goes to shard ``(i - start) % num_shards``).
For long training runs convert once instead (``slotlab data convert``); streaming is for one pass over a range
(evaluation, conversion in parallel, or files too large to convert).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from slotlab.data.multi_object import get_layout, iter_scenes


def scene_to_item(scene: dict[str, np.ndarray], num_masks: int) -> dict[str, torch.Tensor]:
    """The item contract (docs/datasets_builtin.md): ``image`` float32 (3, H, W) in [-1, 1], ``masks`` float32
    (G, H, W) one-hot of ``labels``, ``visibility`` (G,) and every factor float32 (G,) or (G, C)."""
    image = torch.from_numpy(np.ascontiguousarray(scene["image"]))  # (H, W, 3) uint8
    labels = torch.from_numpy(np.ascontiguousarray(scene["labels"])).long()  # (H, W)
    item = {
        "image": image.permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0,  # (3, H, W)
        "masks": torch.nn.functional.one_hot(labels, num_masks).permute(2, 0, 1).float(),  # (G, H, W)
    }
    for key, value in scene.items():
        if key not in ("image", "labels"):
            item[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return item


def _distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class MultiObjectStream(IterableDataset):
    """Items of records [start, stop) of a ``kind`` file, each shard seeing a disjoint subset, together all of it.

    Shards: ``world_size`` ranks (from torch.distributed when initialised, else the ``rank`` / ``world_size``
    arguments) times the DataLoader's workers. Each item also carries ``index``, its record number (int64 scalar).
    Errors name the file and record (TFRecordError), as the in-memory reader's.
    """

    def __init__(self, kind: str, path: str | Path, start: int = 0, stop: int | None = None,
                 rank: int | None = None, world_size: int | None = None) -> None:
        self.layout = get_layout(kind)
        self.kind, self.path, self.start, self.stop = kind, Path(path), start, stop
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
        if world_size is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.rank, self.world_size = rank, world_size

    def shard(self) -> tuple[int, int]:
        """(this shard's index, number of shards), for the calling worker process."""
        rank, world = (self.rank, self.world_size) if self.world_size is not None else _distributed_rank()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shard, num_shards = self.shard()
        mine = lambda index: (index - self.start) % num_shards == shard
        for index, scene in iter_scenes(self.kind, self.path, self.start, self.stop, select=mine):
            item = scene_to_item(scene, self.layout.num_masks)
            item["index"] = torch.tensor(index)
            yield item
