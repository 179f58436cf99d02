"""Shape primitives shared by the built-in synthetic datasets.

Two families live here:

* **Tetrominoes**: the 19 fixed tetromino orientations, keyed by the shape id used in DeepMind's Tetrominoes data,
  and the 5x5 bevelled block every piece is built from. Pieces are precomputed as flat lists of pixel offsets and
  intensities so that a whole batch of scenes can be painted with one fancy-indexing assignment.
* **dSprites-like sprites**: square, ellipse and heart as implicit inside/outside tests on rotated pixel-centre
  coordinates, evaluated for many sprites at once.

Plus the small argument checks and colour conversion both generators need.
"""

from __future__ import annotations

import operator

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Generator arguments


def check_generation_args(num: int, seed: int, start: int) -> tuple[int, int, int]:
    """Validate the (num, seed, start) arguments of a generator and return them as Python ints.

    Raises ValueError for num < 1 or a negative seed/start (NumPy's SeedSequence rejects negative entropy anyway,
    but with a much less helpful message) and TypeError for non-integers such as floats or bools.
    """
    values = []
    for label, value in (("num", num), ("seed", seed), ("start", start)):
        if isinstance(value, bool):
            raise TypeError(f"{label} must be an integer, got bool {value!r}")
        try:
            values.append(operator.index(value))
        except TypeError:
            raise TypeError(f"{label} must be an integer, got {type(value).__name__} {value!r}") from None
    num, seed, start = values
    if num < 1:
        raise ValueError(f"num must be >= 1 (number of scenes to generate), got {num}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if start < 0:
        raise ValueError(f"start must be >= 0 (index of the first scene), got {start}")
    return num, seed, start


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of scene ``index``: depends only on (seed, index), so generation can be chunked."""
    return np.random.default_rng([seed, index])


# ---------------------------------------------------------------------------------------------------------------
# Tetrominoes

BLOCK = 5  # side of one tetromino block in pixels

# Intensity of every pixel of a block (multiplied by the piece's binary RGB colour); measured on the real data.
BEVEL = np.array(
    [
        [191, 255, 255, 255, 223],
        [127, 159, 159, 159, 191],
        [127, 159, 159, 159, 191],
        [127, 159, 159, 159, 191],
        [95, 63, 63, 63, 127],
    ],
    dtype=np.uint8,
)

# Shape id -> block layout ('#' = block), rows top to bottom. Ids marked "assigned" do not occur in the 10 real
# examples; they get the three orientations left over, following the grouping visible in the observed ids
# (1-2 I, 3-6 wide L/J, 7-10 tall L/J, 11-14 S/Z, 15-18 T, 19 O).
TETROMINO_LAYOUTS: dict[int, tuple[str, ...]] = {
    1: ("####",),  # assigned: the only I orientation left
    2: ("#", "#", "#", "#"),
    3: ("###", "#.."),
    4: ("#..", "###"),  # assigned: the wide J orientation left (3-6 are the wide L/J)
    5: ("..#", "###"),
    6: ("###", "..#"),
    7: ("##", ".#", ".#"),
    8: (".#", ".#", "##"),  # assigned: the tall J orientation left (7-10 are the tall L/J)
    9: ("##", "#.", "#."),
    10: ("#.", "#.", "##"),
    11: ("##.", ".##"),
    12: (".##", "##."),
    13: (".#", "##", "#."),
    14: ("#.", "##", ".#"),
    15: (".#.", "###"),
    16: ("###", ".#."),
    17: (".#", "##", ".#"),
    18: ("#.", "##", "#."),
    19: ("##", "##"),
}
NUM_TETROMINO_SHAPES = len(TETROMINO_LAYOUTS)
TETROMINO_PIXELS = 4 * BLOCK * BLOCK  # every piece covers exactly 100 pixels

# The six binary RGB colours: red, green, blue, yellow, magenta, cyan.
TETROMINO_COLORS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=np.uint8,
)


def tetromino_grid(shape_id: int) -> np.ndarray:
    """Boolean block grid (rows, cols) of tetromino ``shape_id`` (1..19)."""
    layout = TETROMINO_LAYOUTS[shape_id]
    return np.array([[ch == "#" for ch in row] for row in layout], dtype=bool)


def tetromino_pixel_mask(shape_id: int) -> np.ndarray:
    """Boolean pixel mask (5*rows, 5*cols) of tetromino ``shape_id``: every block is a full 5x5 square."""
    return np.kron(tetromino_grid(shape_id), np.ones((BLOCK, BLOCK), dtype=bool))


def tetromino_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-shape lookup tables indexed by shape id (row 0 unused).

    Returns ``(rows, cols, intensity, size)``: rows/cols int64 (20, 100) pixel offsets from the piece's top-left
    bounding-box corner, intensity uint8 (20, 100) bevel value of each of those pixels, size int64 (20, 2) the
    bounding box (height, width) in pixels.
    """
    rows = np.zeros((NUM_TETROMINO_SHAPES + 1, TETROMINO_PIXELS), dtype=np.int64)
    cols = np.zeros_like(rows)
    intensity = np.zeros(rows.shape, dtype=np.uint8)
    size = np.zeros((NUM_TETROMINO_SHAPES + 1, 2), dtype=np.int64)
    tiled_bevel = np.tile(BEVEL, (4, 4))  # bevel of the block each pixel belongs to, for grids up to 4x4 blocks
    for shape_id in TETROMINO_LAYOUTS:
        mask = tetromino_pixel_mask(shape_id)
        r, c = np.nonzero(mask)
        rows[shape_id], cols[shape_id] = r, c
        intensity[shape_id] = tiled_bevel[r, c]
        size[shape_id] = mask.shape
    return rows, cols, intensity, size


# ---------------------------------------------------------------------------------------------------------------
# dSprites-like sprites

SQUARE, ELLIPSE, HEART = 1, 2, 3  # dSprites order
SPRITE_SIZE = 20.0  # px: side of the square at scale 1 (the heart's height matches it)
ELLIPSE_AXES = (11.0, 5.5)  # px: semi-axes (along the orientation, across it) at scale 1, a 2:1 ellipse
_HEART_TOP, _HEART_BOTTOM = 1.236, -1.0  # vertical extent of the implicit heart curve below (measured numerically)


def _local_coords(
    cx: np.ndarray, cy: np.ndarray, theta: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in each sprite's own frame.

    cx, cy, theta: (n,) centre column/row in pixels and counter-clockwise angle (as displayed). Returns u, v, each
    float32 (n, height, width): u along the sprite's x axis, v along its up axis (image rows grow downwards, so
    the vertical offset is negated before rotating back by theta).
    """
    cols = np.arange(width, dtype=np.float32) + 0.5  # (W,)
    rows = np.arange(height, dtype=np.float32) + 0.5  # (H,)
    dx = cols[None, None, :] - cx.astype(np.float32)[:, None, None]  # (n, 1, W)
    dy = cy.astype(np.float32)[:, None, None] - rows[None, :, None]  # (n, H, 1), up is positive
    cos = np.cos(theta).astype(np.float32)[:, None, None]
    sin = np.sin(theta).astype(np.float32)[:, None, None]
    u = cos * dx + sin * dy  # (n, H, W)
    v = cos * dy - sin * dx  # (n, H, W)
    return u, v


def _inside(shape_id: int, u: np.ndarray, v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inside test (n, H, W) bool for sprites of one shape, u/v in pixels, scale (n,)."""
    s = scale.astype(np.float32)[:, None, None]
    if shape_id == SQUARE:
        half = 0.5 * SPRITE_SIZE * s
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape_id == ELLIPSE:
        a, b = ELLIPSE_AXES
        return (u / (a * s)) ** 2 + (v / (b * s)) ** 2 <= 1.0
    if shape_id == HEART:
        # Classic implicit heart (p^2 + q^2 - 1)^3 - p^2 q^3 <= 0, scaled so its height equals SPRITE_SIZE * s and
        # shifted so its bounding box is centred on the sprite centre.
        unit = SPRITE_SIZE * s / (_HEART_TOP - _HEART_BOTTOM)
        p = u / unit
        q = v / unit + 0.5 * (_HEART_TOP + _HEART_BOTTOM)
        r = p * p + q * q - 1.0
        return r * r * r - p * p * q * q * q <= 0.0
    raise ValueError(f"unknown sprite shape id {shape_id}; expected {SQUARE}, {ELLIPSE} or {HEART}")


def sprite_masks(
    shape: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    scale: np.ndarray,
    theta: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """Rasterise n sprites with hard edges: bool (n, height, width), True where a pixel centre is inside.

    shape: (n,) ids 1=square, 2=ellipse, 3=heart; cx, cy: (n,) centre column/row in pixels; scale: (n,) relative
    size; theta: (n,) counter-clockwise rotation in radians.
    """
    out = np.zeros((len(shape), height, width), dtype=bool)
    for shape_id in (SQUARE, ELLIPSE, HEART):
        sel = np.flatnonzero(shape == shape_id)
        if sel.size:
            u, v = _local_coords(cx[sel], cy[sel], theta[sel], height, width)
            out[sel] = _inside(shape_id, u, v, scale[sel])
    unknown = ~np.isin(shape, (SQUARE, ELLIPSE, HEART))
    if unknown.any():
        raise ValueError(f"unknown sprite shape ids {np.unique(shape[unknown]).tolist()}")
    return out


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Convert HSV in [0, 1] to RGB in [0, 1]; hsv: (..., 3) -> (..., 3) float64."""
    h, s, v = (np.asarray(hsv, dtype=np.float64)[..., i] for i in range(3))
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    sector = sector.astype(np.int64) % 6
    choices_r = np.stack([v, q, p, p, t, v], axis=-1)
    choices_g = np.stack([t, v, v, q, p, p], axis=-1)
    choices_b = np.stack([p, p, t, v, v, q], axis=-1)
    pick = sector[..., None]
    rgb = [np.take_along_axis(c, pick, axis=-1)[..., 0] for c in (choices_r, choices_g, choices_b)]
    return np.stack(rgb, axis=-1)
