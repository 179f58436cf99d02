"""Built-in set-prediction scenes: 2-D sprites with discrete properties (slotlab's stand-in for CLEVR, no download).

Built on the Multi-dSprites-like sprites (square, ellipse, heart; ``data/shapes.py``), but every property a set
predictor must name is a class, as in CLEVR: each 64x64 scene has a uniform grey background and 2-5 sprites with

- shape: square, ellipse or heart;
- size: small (scale in [0.45, 0.55]) or large (scale in [0.75, 0.9]);
- colour: one of 6 saturated hues (red, yellow, green, cyan, blue, magenta);
- random orientation and a centre placed so that sprites do not overlap (their bounding circles are disjoint), so
  every object is fully visible and the set is fully determined by the image.

Arrays (the cache contract of ``data/cache.py``; G = 6, row 0 = background): ``image`` uint8 (N, 64, 64, 3),
``labels`` uint8 (N, 64, 64), ``visibility`` (N, G), and float32 factors (N, G): ``shape`` (1, 2, 3), ``size``
(0 small, 1 large), ``color`` (0..5), ``x`` (column of the centre / 64), ``y`` (row / 64), ``scale``,
``orientation``. :func:`set_targets` turns them into the (N, 5, 14) targets of ``set_layout.SPRITES_LAYOUT``.
"""

from __future__ import annotations

import numpy as np

from slotlab.data.shapes import check_generation_args, hsv_to_rgb, scene_rng, sprite_masks
from slotlab.set_layout import SPRITES_LAYOUT

IMAGE_SIZE = 64
MIN_SPRITES, MAX_SPRITES = 2, 5
NUM_OBJECTS = MAX_SPRITES + 1  # G
SIZE_RANGES = ((0.45, 0.55), (0.75, 0.9))  # scale ranges of the small and large classes
NUM_COLORS = 6
RADIUS = 12.0  # px: bounding-circle radius of a sprite at scale 1 (>= the square's half-diagonal at 0.9 / 0.75)
_FACTORS = ("shape", "size", "color", "x", "y", "scale", "orientation")


def _sample_scene(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """One scene: grey level and float64 (n, 7) rows of (shape, size, color, cx_px, cy_px, scale, orientation)."""
    grey = int(rng.integers(0, 256))
    n = int(rng.integers(MIN_SPRITES, MAX_SPRITES + 1))
    shape = rng.integers(1, 4, size=n)
    size = rng.integers(0, 2, size=n)
    color = rng.integers(0, NUM_COLORS, size=n)
    scale = np.array([rng.uniform(*SIZE_RANGES[s]) for s in size])
    orientation = rng.uniform(0.0, 2.0 * np.pi, size=n)
    centres = _place(rng, RADIUS * scale)
    return grey, np.column_stack([shape, size, color, centres, scale, orientation])


def _place(rng: np.random.Generator, radius: np.ndarray) -> np.ndarray:
    """Centres (n, 2) in px of disjoint circles inside the image: sequential rejection sampling, restarted when a
    circle finds no room (a crowded early placement can leave none)."""
    n = len(radius)
    for _ in range(1000):
        centres = np.zeros((n, 2))
        for i in range(n):
            for _ in range(100):
                c = rng.uniform(radius[i], IMAGE_SIZE - radius[i], size=2)
                if all(np.hypot(*(c - centres[j])) >= radius[i] + radius[j] for j in range(i)):
                    centres[i] = c
                    break
            else:
                break
        else:
            return centres
    raise RuntimeError(f"sprites_set: could not place {n} sprites of radii {radius.round(1)} without overlap")


def generate_sprites_set(num: int, seed: int, start: int = 0) -> dict[str, np.ndarray]:
    """Generate scenes start..start+num-1 (scene i depends only on (seed, i)). See the module docstring."""
    num, seed, start = check_generation_args(num, seed, start)
    image = np.zeros((num, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.zeros((num, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    visibility = np.zeros((num, NUM_OBJECTS), dtype=np.float32)
    factors = {key: np.zeros((num, NUM_OBJECTS), dtype=np.float32) for key in _FACTORS}
    palette = np.round(hsv_to_rgb(np.column_stack([np.arange(NUM_COLORS) / NUM_COLORS, np.ones((NUM_COLORS, 2))]))
                       * 255).astype(np.uint8)  # (6, 3): red, yellow, green, cyan, blue, magenta
    for i in range(num):
        grey, rows = _sample_scene(scene_rng(seed, start + i))
        n = len(rows)
        masks = sprite_masks(rows[:, 0].astype(np.int64), rows[:, 3], rows[:, 4], rows[:, 5], rows[:, 6],
                             IMAGE_SIZE, IMAGE_SIZE)  # (n, 64, 64) bool, disjoint
        image[i] = grey
        for k in range(n):
            labels[i][masks[k]] = k + 1
            image[i][masks[k]] = palette[int(rows[k, 2])]
        visibility[i, : n + 1] = 1.0
        for j, key in enumerate(_FACTORS):
            value = rows[:, j] / IMAGE_SIZE if key in ("x", "y") else rows[:, j]
            factors[key][i, 1 : n + 1] = value
    return {"image": image, "labels": labels, "visibility": visibility, **factors}


def set_targets(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The (N, 5, 14) float32 targets in ``SPRITES_LAYOUT`` from generated arrays; absent objects are zero rows."""
    present = arrays["visibility"][:, 1:] > 0  # (N, 5)
    N, M = present.shape
    target = np.zeros((N, M, SPRITES_LAYOUT.width), dtype=np.float32)
    target[..., 0] = arrays["x"][:, 1:]
    target[..., 1] = arrays["y"][:, 1:]
    blocks = {name: start for name, start, _, _ in SPRITES_LAYOUT.blocks}
    n_idx, m_idx = np.nonzero(present)
    for name, column in (("size", arrays["size"]), ("shape", arrays["shape"] - 1), ("color", arrays["color"])):
        target[n_idx, m_idx, blocks[name] + column[:, 1:][n_idx, m_idx].astype(np.int64)] = 1.0
    target[..., SPRITES_LAYOUT.flag] = present
    target[~present] = 0.0
    return target
