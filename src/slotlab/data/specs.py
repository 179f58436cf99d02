"""Data specs: the strings ``--data`` and ``--val-data`` take, and the paper's train / held-out record ranges.

Grammar (docs/datasets.md)::

    KIND:PATH            a multi_object_datasets TFRecord (KIND in multi_object.LAYOUTS), e.g. tetrominoes:FILE
    KIND:PATH@A:B        only records [A, B) (either end may be left out: @A: or @:B)
    KIND:PATH@NAME       a named protocol range of the kind: train, test (held-out, larger), test320 (the paper's size)
    cache:DIR[@A:B]      a slotlab cache directory (``slotlab data convert`` / ``data generate``), items [A, B)
    clevr:DIR            CLEVR v1.0 (images + scene JSON) for set prediction, not object discovery

Record ranges count *records* of the file; kinds with an object-count filter (clevr6) keep fewer scenes, so the
named ranges of those kinds also carry a scene ``limit``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from slotlab.data.multi_object import LAYOUTS, read_multi_object

# Named record ranges (start, stop, scene limit). Train: the paper's first 60K (Multi-dSprites, Tetrominoes) and
# 70K (CLEVR6) scenes (docs/reference.md). Held-out: records from 90,000 on, far from the training range; "test" is
# slotlab's default (10,000 records), "test320" the paper's 320 scenes (the first 320 kept in that range).
_SIXTY_K = {"train": (0, 60_000, None), "test": (90_000, 100_000, None), "test320": (90_000, 100_000, 320)}
_SEVENTY_K = {"train": (0, 70_000, None), "test": (90_000, 100_000, None), "test320": (90_000, 100_000, 320)}
PROTOCOL_RANGES: dict[str, dict[str, tuple[int, int | None, int | None]]] = {
    **{kind: _SIXTY_K for kind in LAYOUTS if kind.startswith(("tetrominoes", "multi_dsprites"))},
    "objects_room": _SIXTY_K,
    "clevr_with_masks": _SEVENTY_K,
    "clevr6": _SEVENTY_K,
}
_RANGE = re.compile(r"@(\d*):(\d*)$")
_NAMED = re.compile(r"@([a-z0-9_]+)$")


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` string: ``kind`` (a multi_object kind, "cache" or "clevr"), ``path``, a record/item
    range [start, stop) (stop None = to the end) and ``limit``, the most scenes to keep (None = all)."""

    kind: str
    path: str
    start: int = 0
    stop: int | None = None
    limit: int | None = None

    def __str__(self) -> str:
        rng = f"@{self.start}:{'' if self.stop is None else self.stop}" if self.start or self.stop is not None else ""
        return f"{self.kind}:{self.path}{rng}" + (f" (first {self.limit} scenes)" if self.limit else "")


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``KIND:PATH[@A:B | @NAME]``; ValueError saying what is expected otherwise."""
    kinds = ["cache", "clevr", *sorted(LAYOUTS)]
    kind, sep, rest = spec.partition(":")
    if not sep or not rest or kind not in kinds:
        raise ValueError(f"data spec {spec!r}: expected KIND:PATH[@A:B] with KIND one of {kinds} "
                         "(or test / val / train for a run's built-in splits)")
    start, stop, limit = 0, None, None
    if match := _RANGE.search(rest):
        rest = rest[: match.start()]
        start = int(match.group(1) or 0)
        stop = int(match.group(2)) if match.group(2) else None
        if stop is not None and stop <= start:
            raise ValueError(f"data spec {spec!r}: empty range [{start}, {stop}); expected A < B")
    elif (match := _NAMED.search(rest)) and not Path(rest).exists():
        name = match.group(1)
        ranges = PROTOCOL_RANGES.get(kind, {})
        if name not in ranges:
            raise ValueError(f"data spec {spec!r}: no range named {name!r} for {kind}; "
                             f"expected @A:B or one of {sorted(ranges) or 'none (use @A:B)'}")
        rest = rest[: match.start()]
        start, stop, limit = ranges[name]
    return DataSpec(kind, rest, start, stop, limit)


def load_scenes(spec: DataSpec | str, limit: int | None = None):
    """The scenes of ``spec`` as a :class:`~slotlab.data.SceneSet` (at most ``limit`` scenes, if given)."""
    from slotlab.data import SceneSet, load_cache, read_meta

    spec = parse_data_spec(spec) if isinstance(spec, str) else spec
    limits = [n for n in (limit, spec.limit) if n is not None]
    limit = min(limits) if limits else None
    if spec.kind == "clevr":
        raise ValueError(f"{spec}: CLEVR v1.0 has no masks; it is for set prediction (data.name=clevr), "
                         "not object discovery (use clevr_with_masks or clevr6)")
    if spec.kind == "cache":
        meta, arrays = read_meta(spec.path), load_cache(spec.path)
        num = len(arrays["image"])
        stop = num if spec.stop is None else spec.stop
        if spec.start >= num or stop > num:
            raise ValueError(f"{spec}: the cache holds {num} items, so items [{spec.start}, {stop}) are not all there")
        if limit is not None:
            stop = min(stop, spec.start + limit)
        return SceneSet.from_arrays(arrays, meta["num_objects"], str(spec), spec.start, stop,
                                    num_background=int(meta.get("num_background", 1)))
    layout = LAYOUTS[spec.kind]
    arrays = read_multi_object(spec.kind, spec.path, spec.start, spec.stop, limit=limit)
    if spec.limit is not None and len(arrays["image"]) < limit:
        raise ValueError(f"{spec}: only {len(arrays['image'])} scenes in the range, expected {limit}")
    return SceneSet.from_arrays(arrays, layout.num_masks, str(spec), num_background=layout.num_background)


def training_specs(data: str, val_data: str | None, val_size: int) -> tuple[DataSpec, DataSpec]:
    """The train and validation specs of ``slotlab train --data DATA [--val-data VAL]``.

    Train: DATA's range, by default the kind's protocol ``train`` range (first 60K / 70K records) or, for a cache
    directory, every item but the last ``val_size``. Validation: VAL if given, else the ``val_size`` scenes that
    follow the training range in the same source (held out from training, disjoint from the ``test`` ranges).
    """
    train = parse_data_spec(data)
    explicit_range = data != f"{train.kind}:{train.path}"
    if train.kind == "cache" and not explicit_range and val_data is None:
        num = int(_cache_size(train.path))
        if num <= val_size:
            raise ValueError(f"{train}: {num} items leave nothing to train on after holding out data.val_size="
                             f"{val_size} for validation; pass --val-data or --set data.val_size=N")
        train = replace(train, stop=num - val_size)
    elif train.kind in PROTOCOL_RANGES and not explicit_range:
        start, stop, limit = PROTOCOL_RANGES[train.kind]["train"]
        train = replace(train, start=start, stop=stop, limit=limit)
    if val_data is not None:
        return train, parse_data_spec(val_data)
    if train.stop is None:
        raise ValueError(f"--data {data}: training reads to the end of the file, so nothing is held out for "
                         "validation; give a range (@A:B) or --val-data")
    val_stop = None if train.kind != "cache" else train.stop + val_size
    return train, DataSpec(train.kind, train.path, train.stop, val_stop, val_size)


def _cache_size(path: str) -> int:
    from slotlab.data import read_meta

    return int(read_meta(path)["num"])
