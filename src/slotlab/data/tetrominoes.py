"""Tetrominoes-like scenes that match DeepMind's Tetrominoes pixel for pixel in style.

Each 35x35 scene has a black background and exactly three non-overlapping tetromino pieces (they may touch).
A piece is four 5x5 bevelled blocks laid on the piece's own 5-px grid, placed at any integer pixel offset that keeps
it inside the image, coloured with one of six binary RGB colours (drawn independently, so repeats happen).
See ``docs/datasets_builtin.md`` for what is measured from the real data and what is assumed.
"""

from __future__ import annotations

import numpy as np

from slotlab.data.shapes import (
    NUM_TETROMINO_SHAPES,
    TETROMINO_COLORS,
    check_generation_args,
    scene_rng,
    tetromino_pixel_mask,
    tetromino_tables,
)

IMAGE_SIZE = 35
NUM_PIECES = 3
NUM_OBJECTS = NUM_PIECES + 1  # G: background + 3 pieces
_MAX_TRIES = 1000  # position draws per piece before the scene is restarted (never needed in practice)

_PIXEL_MASKS = {shape_id: tetromino_pixel_mask(shape_id) for shape_id in range(1, NUM_TETROMINO_SHAPES + 1)}
_ROWS, _COLS, _INTENSITY, _SIZE = tetromino_tables()


def _try_place_pieces(rng: np.random.Generator) -> np.ndarray | None:
    """One attempt at a scene layout: int64 (3, 4) rows of (shape id, colour index, top row, left column).

    Pieces are drawn one after another; a piece's shape and colour are uniform, then its position is redrawn
    uniformly until it overlaps no earlier piece. Returns None if some piece found no free spot.
    """
    occupied = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    pieces = np.zeros((NUM_PIECES, 4), dtype=np.int64)
    for k in range(NUM_PIECES):
        shape_id = int(rng.integers(1, NUM_TETROMINO_SHAPES + 1))
        color = int(rng.integers(len(TETROMINO_COLORS)))
        mask = _PIXEL_MASKS[shape_id]
        height, width = mask.shape
        for _ in range(_MAX_TRIES):
            top = int(rng.integers(IMAGE_SIZE - height + 1))
            left = int(rng.integers(IMAGE_SIZE - width + 1))
            window = occupied[top : top + height, left : left + width]
            if not (window & mask).any():
                window |= mask
                pieces[k] = shape_id, color, top, left
                break
        else:
            return None
    return pieces


def _sample_layouts(num: int, seed: int, start: int) -> np.ndarray:
    """Layouts of scenes start..start+num-1: int64 (num, 3, 4), see ``_try_place_pieces``."""
    layouts = np.zeros((num, NUM_PIECES, 4), dtype=np.int64)
    for i in range(num):
        rng = scene_rng(seed, start + i)
        pieces = _try_place_pieces(rng)
        while pieces is None:  # continue with the same generator, so the result stays deterministic
            pieces = _try_place_pieces(rng)
        layouts[i] = pieces
    return layouts


def _render(layouts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint all scenes at once. layouts: (n, 3, 4). Returns image uint8 (n, 35, 35, 3), labels uint8 (n, 35, 35)."""
    n = len(layouts)
    shape, color, top, left = (layouts[..., j] for j in range(4))  # each (n, 3)
    rows = top[..., None] + _ROWS[shape]  # (n, 3, 100)
    cols = left[..., None] + _COLS[shape]  # (n, 3, 100)
    scene = np.arange(n)[:, None, None]  # (n, 1, 1)
    labels = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    labels[scene, rows, cols] = np.arange(1, NUM_PIECES + 1, dtype=np.uint8)[None, :, None]
    image = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    # (n, 3, 100, 1) * (n, 3, 1, 3): bevel intensity times binary colour, exact in uint8
    image[scene, rows, cols] = _INTENSITY[shape][..., None] * TETROMINO_COLORS[color][:, :, None, :]
    return image, labels


def _factors(layouts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-object factor arrays (n, G[, 3]) float32, row 0 = background (all zeros), visibility all ones."""
    n = len(layouts)
    x = np.zeros((n, NUM_OBJECTS), dtype=np.float32)
    y = np.zeros_like(x)
    shape = np.zeros_like(x)
    color = np.zeros((n, NUM_OBJECTS, 3), dtype=np.float32)
    shape[:, 1:] = layouts[..., 0]
    color[:, 1:] = TETROMINO_COLORS[layouts[..., 1]]
    x[:, 1:] = layouts[..., 2]  # top row of the bounding box (DeepMind's naming)
    y[:, 1:] = layouts[..., 3]  # left column of the bounding box
    visibility = np.ones((n, NUM_OBJECTS), dtype=np.float32)  # pieces never overlap, so all are visible
    return {"visibility": visibility, "x": x, "y": y, "shape": shape, "color": color}


def generate_tetrominoes(num: int, seed: int, start: int = 0) -> dict[str, np.ndarray]:
    """Generate ``num`` Tetrominoes-like scenes with indices start..start+num-1.

    Scene i depends only on (seed, start + i), so any chunking gives the same scenes. Returns NumPy arrays:
    ``image`` uint8 (num, 35, 35, 3), ``labels`` uint8 (num, 35, 35) with 0 = background and 1..3 the pieces,
    ``visibility`` float32 (num, 4) and the factors ``x``, ``y``, ``shape`` float32 (num, 4) and ``color``
    float32 (num, 4, 3).
    """
    num, seed, start = check_generation_args(num, seed, start)
    layouts = _sample_layouts(num, seed, start)
    image, labels = _render(layouts)
    return {"image": image, "labels": labels, **_factors(layouts)}
