"""Tests of the built-in synthetic datasets (Tetrominoes-like, Multi-dSprites-like) and their on-disk cache."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from slotlab.data import cache as cache_mod
from slotlab.data.cache import CachedDataset, get_or_create, load_cache, write_cache
from slotlab.data.multi_dsprites import generate_multi_dsprites
from slotlab.data.shapes import BEVEL, TETROMINO_COLORS, TETROMINO_LAYOUTS, tetromino_pixel_mask
from slotlab.data.tetrominoes import generate_tetrominoes

GENERATORS = {"tetrominoes": (generate_tetrominoes, 4, 35), "multi_dsprites": (generate_multi_dsprites, 6, 64)}
_REPO = Path(__file__).resolve().parents[2]
_REAL_CANDIDATES = [
    _REPO / "shared/data/real/tetrominoes_mini.tfrecords",
    _REPO.parent / "shared/data/real/tetrominoes_mini.tfrecords",
]
REAL_TETROMINOES = next((p for p in _REAL_CANDIDATES if p.is_file()), None)


@pytest.fixture(scope="module")
def tetro() -> dict[str, np.ndarray]:
    return generate_tetrominoes(200, seed=3)


@pytest.fixture(scope="module")
def sprites() -> dict[str, np.ndarray]:
    return generate_multi_dsprites(200, seed=3)


# ---------------------------------------------------------------------------------------------------------------
# Arguments and determinism


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("kwargs", [{"num": 0, "seed": 0}, {"num": 2, "seed": -1}, {"num": 2, "seed": 0, "start": -3}])
def test_invalid_arguments_raise_value_error(name: str, kwargs: dict) -> None:
    generate = GENERATORS[name][0]
    with pytest.raises(ValueError, match="num|seed|start"):
        generate(**kwargs)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_output_dtypes_and_shapes(name: str) -> None:
    generate, num_objects, size = GENERATORS[name]
    out = generate(3, seed=1)
    assert out["image"].dtype == np.uint8 and out["image"].shape == (3, size, size, 3)
    assert out["labels"].dtype == np.uint8 and out["labels"].shape == (3, size, size)
    for key, value in out.items():
        if key not in ("image", "labels"):
            assert value.dtype == np.float32, key
            assert value.shape[:2] == (3, num_objects), key
    assert out["color"].shape == (3, num_objects, 3)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generation_is_deterministic_and_chunkable(name: str) -> None:
    generate = GENERATORS[name][0]
    full = generate(12, seed=5)
    again = generate(12, seed=5)
    chunk = generate(5, seed=5, start=7)
    other = generate(12, seed=6)
    for key in full:
        np.testing.assert_array_equal(full[key], again[key], err_msg=key)
        np.testing.assert_array_equal(full[key][7:], chunk[key], err_msg=key)
    assert not np.array_equal(full["image"], other["image"])


# ---------------------------------------------------------------------------------------------------------------
# Tetrominoes: images agree with labels and factors


def _expected_tetromino_image(labels: np.ndarray, out: dict[str, np.ndarray], i: int) -> np.ndarray:
    """Repaint scene i from its labels and factors: colour * bevel of the block each pixel lies in."""
    expected = np.zeros(labels.shape + (3,), dtype=np.int64)
    rows, cols = np.indices(labels.shape)
    for k in range(1, 4):
        top, left = int(out["x"][i, k]), int(out["y"][i, k])
        inside = labels == k
        bevel = BEVEL[(rows - top) % 5, (cols - left) % 5]
        expected[inside] = bevel[inside][:, None] * out["color"][i, k].astype(np.int64)
    return expected


def test_tetrominoes_images_match_labels_and_factors(tetro: dict[str, np.ndarray]) -> None:
    colors = {tuple(c) for c in TETROMINO_COLORS.tolist()}
    for i in range(len(tetro["image"])):
        labels = tetro["labels"][i]
        np.testing.assert_array_equal(tetro["image"][i][labels == 0], 0)  # background exactly black
        np.testing.assert_array_equal(tetro["image"][i], _expected_tetromino_image(labels, tetro, i))
        for k in range(1, 4):
            shape_id = int(tetro["shape"][i, k])
            template = tetromino_pixel_mask(shape_id)
            top, left = int(tetro["x"][i, k]), int(tetro["y"][i, k])
            piece = labels == k  # 100 px each and labels unique per pixel, so pieces cannot overlap
            assert piece.sum() == 100
            np.testing.assert_array_equal(
                piece[top : top + template.shape[0], left : left + template.shape[1]], template
            )
            assert tuple(int(c) for c in tetro["color"][i, k]) in colors
    assert (tetro["visibility"] == 1).all()
    for key in ("x", "y", "shape"):
        assert (tetro[key][:, 0] == 0).all()
    assert (tetro["color"][:, 0] == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Tetrominoes: statistics of the real data vs generated scenes


def _tetromino_stats(images: np.ndarray, labels: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict:
    """Statistics comparable between real and generated scenes. images (n, 35, 35, 3), labels/x/y per object."""
    values, counts = np.unique(images, return_counts=True)
    piece_sizes, bevel_ok, in_bounds, layouts = set(), True, True, {}
    for i in range(len(images)):
        for k in range(1, labels[i].max() + 1):
            rr, cc = np.nonzero(labels[i] == k)
            piece_sizes.add(len(rr))
            top, left = rr.min(), cc.min()
            in_bounds &= top == x[i, k] and left == y[i, k] and rr.max() < 35 and cc.max() < 35
            grid = (labels[i] == k)[top : rr.max() + 1 : 5, left : cc.max() + 1 : 5]
            layouts[tuple(map(tuple, grid))] = layouts.get(tuple(map(tuple, grid)), 0) + 1
            color = images[i][rr, cc].max(axis=0) > 0  # binary colour of the piece
            for br, bc in zip(*np.nonzero(grid), strict=True):
                block = images[i][top + 5 * br : top + 5 * br + 5, left + 5 * bc : left + 5 * bc + 5].astype(int)
                bevel_ok &= bool((block == BEVEL[:, :, None] * color).all())
    nonzero = counts[values > 0] / counts[values > 0].sum()
    return {
        "values": set(values.tolist()),
        "nonzero_hist": dict(zip(values[values > 0].tolist(), nonzero.tolist(), strict=True)),
        "piece_sizes": piece_sizes,
        "bevel_ok": bevel_ok,
        "in_bounds": bool(in_bounds),
        "layouts": layouts,
    }


def _read_real_tetrominoes() -> dict[str, np.ndarray]:
    from slotlab.data.tfrecord import iter_records, parse_example

    examples = [parse_example(r) for r in iter_records(REAL_TETROMINOES)]
    masks = np.stack([e["mask"].reshape(4, 35, 35) for e in examples])  # (n, 4, 35, 35) 0/255
    return {
        "image": np.stack([e["image"].reshape(35, 35, 3) for e in examples]),
        "labels": masks.argmax(axis=1).astype(np.uint8),
        **{key: np.stack([e[key] for e in examples]) for key in ("x", "y", "shape", "visibility")},
        "color": np.stack([e["color"].reshape(4, 3) for e in examples]),
    }


@pytest.mark.skipif(REAL_TETROMINOES is None, reason="real tetrominoes_mini.tfrecords not available")
def test_generated_tetrominoes_match_real_statistics(tetro: dict[str, np.ndarray]) -> None:
    real = _read_real_tetrominoes()
    real_stats = _tetromino_stats(real["image"], real["labels"], real["x"], real["y"])
    gen_stats = _tetromino_stats(tetro["image"], tetro["labels"], tetro["x"], tetro["y"])
    assert real_stats["values"] == gen_stats["values"] == {0, 63, 95, 127, 159, 191, 223, 255}
    for value, fraction in real_stats["nonzero_hist"].items():  # bevel fixes these up to colour statistics
        assert abs(gen_stats["nonzero_hist"][value] - fraction) < 0.05, value
    assert real_stats["piece_sizes"] == gen_stats["piece_sizes"] == {100}
    assert real_stats["bevel_ok"] and gen_stats["bevel_ok"]
    assert real_stats["in_bounds"] and gen_stats["in_bounds"]
    assert set(real_stats["layouts"]) <= set(gen_stats["layouts"])  # every real orientation is generated
    assert len(gen_stats["layouts"]) == 19
    # The id -> orientation mapping agrees with every real piece, and visibility/background rows match.
    for i in range(len(real["image"])):
        for k in range(1, 4):
            template = tetromino_pixel_mask(int(real["shape"][i, k]))
            top, left = int(real["x"][i, k]), int(real["y"][i, k])
            window = real["labels"][i][top : top + template.shape[0], left : left + template.shape[1]] == k
            np.testing.assert_array_equal(window, template)
    np.testing.assert_array_equal(real["visibility"], np.ones_like(real["visibility"]))
    assert (real["color"][:, 0] == 0).all() and (tetro["color"][:, 0] == 0).all()
    assert {tuple(c) for c in real["color"][:, 1:].reshape(-1, 3).tolist()} <= {
        tuple(c) for c in TETROMINO_COLORS.tolist()
    }


def test_tetromino_layouts_are_the_19_distinct_orientations() -> None:
    grids = {tuple(layout) for layout in TETROMINO_LAYOUTS.values()}
    assert sorted(TETROMINO_LAYOUTS) == list(range(1, 20)) and len(grids) == 19
    assert all(sum(row.count("#") for row in layout) == 4 for layout in TETROMINO_LAYOUTS.values())


# ---------------------------------------------------------------------------------------------------------------
# Multi-dSprites


def test_multi_dsprites_images_match_labels_and_factors(sprites: dict[str, np.ndarray]) -> None:
    num_objects = 6
    for i in range(len(sprites["image"])):
        image, labels = sprites["image"][i], sprites["labels"][i]
        palette = np.round(sprites["color"][i] * 255).astype(np.uint8)  # (6, 3), row 0 = background grey
        assert palette[0, 0] == palette[0, 1] == palette[0, 2]
        np.testing.assert_array_equal(image, palette[labels])  # bg is the grey, each sprite its colour
        counts = np.bincount(labels.ravel(), minlength=num_objects)
        assert counts.sum() == labels.size and labels.max() < num_objects  # labels partition the image
        np.testing.assert_array_equal(sprites["visibility"][i][1:], (counts[1:] > 0).astype(np.float32))
        assert sprites["visibility"][i][0] == 1
    present = sprites["shape"][:, 1:] > 0
    n = present.sum(axis=1)
    assert n.min() >= 2 and n.max() <= 5 and set(n.tolist()) == {2, 3, 4, 5}
    assert (present[:, :-1] >= present[:, 1:]).all()  # present sprites come first
    assert set(np.unique(sprites["shape"][:, 1:][present]).tolist()) == {1.0, 2.0, 3.0}
    assert ((sprites["scale"][:, 1:][present] >= 0.5) & (sprites["scale"][:, 1:][present] <= 1)).all()
    assert ((sprites["orientation"] >= 0) & (sprites["orientation"] < 2 * math.pi)).all()
    for key in ("x", "y"):
        assert ((sprites[key] >= 0) & (sprites[key] <= 1)).all()
    for key in ("x", "y", "shape", "scale", "orientation"):  # background and padding rows are zero
        assert (sprites[key][:, 0] == 0).all() and (sprites[key][:, 1:][~present] == 0).all()
    assert (sprites["visibility"][:, 1:][~present] == 0).all()
    sizes = np.array([(sprites["labels"][i] == k).sum() for i in range(50) for k in range(1, 6)])
    assert sizes.max() <= 450 and np.median(sizes[sizes > 0]) > 60  # clearly visible, not image-filling


def test_multi_dsprites_fully_occluded_sprite_is_invisible() -> None:
    out = generate_multi_dsprites(400, seed=11)
    hidden = (out["shape"] > 0) & (out["visibility"] == 0)
    assert hidden.any()  # occlusion happens at this density
    i, k = np.argwhere(hidden)[0]
    assert not (out["labels"][i] == k).any()


# ---------------------------------------------------------------------------------------------------------------
# Cache


def _check_item(item: dict[str, torch.Tensor], num_objects: int, size: int) -> None:
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, size, size)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["masks"].dtype == torch.float32 and item["masks"].shape == (num_objects, size, size)
    assert torch.equal(item["masks"].sum(0), torch.ones(size, size))  # one-hot per pixel
    assert set(item["masks"].unique().tolist()) <= {0.0, 1.0}
    assert item["visibility"].shape == (num_objects,) and item["visibility"][0] == 1
    assert item["color"].shape == (num_objects, 3)
    for key, value in item.items():
        assert value.dtype == torch.float32, key
        if key not in ("image", "masks"):
            assert value.shape[0] == num_objects, key


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_cache_round_trip_and_items(name: str, tmp_path: Path) -> None:
    generate, num_objects, size = GENERATORS[name]
    arrays = generate(6, seed=2)
    path = write_cache(arrays, tmp_path / "c", name=name, seed=2, start=0, num_objects=num_objects)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["num"] == 6 and meta["num_objects"] == num_objects and meta["image_size"] == [size, size]
    loaded = load_cache(path)
    assert set(loaded) == set(arrays)
    for key in arrays:
        assert isinstance(loaded[key], np.memmap), key
        np.testing.assert_array_equal(loaded[key], arrays[key])
    dataset = CachedDataset(path)
    assert len(dataset) == 6
    for i in (0, 5, -1):
        item = dataset[i]
        _check_item(item, num_objects, size)
        j = i % 6
        expected_image = torch.from_numpy(arrays["image"][j]).permute(2, 0, 1).float() / 255 * 2 - 1
        assert torch.equal(item["image"], expected_image)
        assert torch.equal(item["masks"].argmax(0), torch.from_numpy(arrays["labels"][j]).long())
    with pytest.raises(IndexError):
        dataset[6]
    in_memory = CachedDataset(arrays)
    assert all(torch.equal(in_memory[2][k], v) for k, v in dataset[2].items())
    clone = pickle.loads(pickle.dumps(dataset))
    assert all(torch.equal(clone[1][k], v) for k, v in dataset[1].items())


def test_write_cache_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = generate_tetrominoes(4, seed=0)
    target = tmp_path / "tetro"
    write_cache(arrays, target, name="tetrominoes", seed=0, start=0, num_objects=4)
    before = load_cache(target)["image"].copy()
    saved = []

    def failing_save(file, array, **kwargs):  # write one array, then crash mid-way
        if saved:
            raise OSError("disk full (simulated)")
        saved.append(file)
        with open(file, "wb") as f:
            np.lib.format.write_array(f, array)

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        write_cache(generate_tetrominoes(4, seed=9), target, name="tetrominoes", seed=9, start=0, num_objects=4)
    with pytest.raises(OSError, match="simulated"):
        write_cache(arrays, tmp_path / "fresh", name="tetrominoes", seed=0, start=0, num_objects=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tetro"]  # no partial or temporary directories
    np.testing.assert_array_equal(load_cache(target)["image"], before)  # old cache intact


def test_load_cache_errors_are_clear(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_cache(missing)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        (tmp_path / "no_meta").mkdir()
        load_cache(tmp_path / "no_meta")
    path = write_cache(
        generate_tetrominoes(2, seed=0), tmp_path / "ok", name="tetrominoes", seed=0, start=0, num_objects=4
    )
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "num": 0}))
    with pytest.raises(ValueError, match="empty"):
        load_cache(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_cache(path)
    (path / "meta.json").write_text(json.dumps(meta))
    data = (path / "image.npy").read_bytes()
    (path / "image.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="image.npy"):
        load_cache(path)
    (path / "image.npy").unlink()
    with pytest.raises(FileNotFoundError, match="image.npy"):
        load_cache(path)
    empty = {k: v[:0] for k, v in generate_tetrominoes(1, seed=0).items()}
    with pytest.raises(ValueError, match="empty"):
        write_cache(empty, tmp_path / "empty", name="tetrominoes", seed=0, start=0, num_objects=4)
    with pytest.raises(ValueError, match="empty"):
        CachedDataset(empty)


def test_get_or_create_reuses_and_repairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = get_or_create("tetrominoes", 5, seed=4, cache_root=tmp_path)
    assert path == tmp_path / "tetrominoes-seed4-n5"
    np.testing.assert_array_equal(load_cache(path)["image"], generate_tetrominoes(5, seed=4)["image"])
    stamp = (path / "meta.json").stat().st_mtime_ns

    def no_generation(*args, **kwargs):
        raise AssertionError("cache should have been reused")

    real_entry = cache_mod.GENERATORS["tetrominoes"]
    monkeypatch.setitem(cache_mod.GENERATORS, "tetrominoes", (no_generation, 4))
    assert get_or_create("tetrominoes", 5, seed=4, cache_root=tmp_path) == path
    assert (path / "meta.json").stat().st_mtime_ns == stamp
    monkeypatch.setitem(cache_mod.GENERATORS, "tetrominoes", real_entry)
    (path / "labels.npy").unlink()  # damaged cache is regenerated
    assert get_or_create("tetrominoes", 5, seed=4, cache_root=tmp_path) == path
    assert len(CachedDataset(path)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tetrominoes-seed4-n5"]
    with pytest.raises(ValueError, match="unknown"):
        get_or_create("clevr", 5, seed=0, cache_root=tmp_path)


def test_get_or_create_generates_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "_GENERATION_CHUNK", 4)
    path = get_or_create("multi_dsprites", 10, seed=1, cache_root=tmp_path)
    whole = generate_multi_dsprites(10, seed=1)
    loaded = load_cache(path)
    for key in whole:
        np.testing.assert_array_equal(loaded[key], whole[key], err_msg=key)
    _check_item(CachedDataset(path)[9], 6, 64)
