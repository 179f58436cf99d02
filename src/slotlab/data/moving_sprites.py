"""``moving_sprites`` and ``moving_tetrominoes``: videos generated on the fly, with exact ground truth for video
models.

``moving_sprites``: each video shows 2-5 sprites (square, ellipse, triangle; random size and colour) on a grey
background, Multi-dSprites-like. ``moving_tetrominoes``: three Tetrominoes pieces (the image dataset's 19 shapes,
bevelled 5x5 blocks, six binary colours; slotlab.data.tetrominoes) on a black background. Every
sprite moves with a constant integer velocity in pixels per frame and bounces off the borders; sprites occlude each
other in a fixed depth order (a higher object id is in front). Because positions and velocities are integers and
sprites are binary masks translated without resampling, the ground truth is exact:

- ``labels`` (N, F, H, W) uint8: the object id of every pixel, 0 = background; an object keeps its id in every frame;
- ``motion`` (N, F, G, 2) float32: each object's displacement (dy, dx) in pixels from frame t to frame t + 1 (the
  last frame holds the displacement to the frame that would follow). The forward optical flow of a pixel is the
  motion of the object it shows (:func:`forward_flow`); the background does not move;
- ``centers`` (N, G, 2) float32: the first frame's centre of mass of each object's visible pixels, (y, x) in [0, 1];
- ``boxes`` (N, G, 4) float32: the first frame's box around the visible pixels, (ymin, xmin, ymax, xmax) in [0, 1];
- ``present`` (N, G) float32: 1 for the objects of the video (all visible in the first frame), 0 for padding.

Row 0 of ``motion``, ``centers``, ``boxes`` and ``present`` is the background. Video i depends only on
(seed, i), so splits are disjoint ranges of one stream (as the image generators in slotlab.data).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

NUM_OBJECTS = 6  # G: the background and up to 5 sprites
MIN_SPRITES, MAX_SPRITES = 2, 5
BACKGROUND = 128  # grey
TETROMINO_PIECES = 3  # moving_tetrominoes: pieces per video ...
TETROMINO_OBJECTS = TETROMINO_PIECES + 1  # ... and G with the background (black, 0)
MIN_VISIBLE = 12  # pixels each sprite shows in the first frame (a video is redrawn until all do)
SHAPES = ("square", "ellipse", "triangle")


def sprite_mask(shape: str, size: int) -> np.ndarray:
    """A binary (size, size) mask of ``shape``."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "ellipse":
        return ((y - c) / (size / 2)) ** 2 + ((x - c) / (size / 2)) ** 2 <= 1.0
    if shape == "triangle":  # apex at the top, base at the bottom row
        return np.abs(x - c) <= (y + 1) / 2
    raise ValueError(f"unknown sprite shape {shape!r}; expected one of {SHAPES}")


def _trajectory(rng: np.random.Generator, size: tuple[int, int], resolution: int, num_frames: int) -> np.ndarray:
    """Integer top-left positions (F + 1, 2) of a sprite of ``size`` (height, width) bouncing inside the frame."""
    hi = resolution - np.asarray(size)  # (2,) the largest top-left row and column
    pos = rng.integers(0, hi + 1, size=2)
    vel = rng.integers(-3, 4, size=2)
    while not vel.any():
        vel = rng.integers(-3, 4, size=2)
    out = np.empty((num_frames + 1, 2), dtype=np.int64)
    out[0] = pos
    for t in range(1, num_frames + 1):
        nxt = pos + vel
        for a in range(2):  # reflect off the borders: the sprite stays entirely inside
            if nxt[a] < 0:
                nxt[a], vel[a] = -nxt[a], -vel[a]
            elif nxt[a] > hi[a]:
                nxt[a], vel[a] = 2 * hi[a] - nxt[a], -vel[a]
        pos = nxt
        out[t] = pos
    return out


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour, distinct from the grey background."""
    hue = rng.uniform(0, 6)
    x = 1 - abs(hue % 2 - 1)
    rgb = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(hue) % 6]
    value = rng.uniform(0.6, 1.0)
    return np.round(np.asarray(rgb) * value * 255).astype(np.uint8)


def _sprites(rng: np.random.Generator, resolution: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """moving_sprites' objects, one at a time: 2-5 of (mask (h, w) bool, pixels (h, w, 3) uint8), each one flat
    colour (a generator: each object's trajectory is drawn right after it, from the same stream)."""
    for _ in range(int(rng.integers(MIN_SPRITES, MAX_SPRITES + 1))):
        size = int(rng.integers(resolution // 7, resolution // 3.5 + 1))
        mask = sprite_mask(SHAPES[int(rng.integers(len(SHAPES)))], size)
        yield mask, np.broadcast_to(_colour(rng), (size, size, 3))


def _tetrominoes(rng: np.random.Generator, resolution: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """moving_tetrominoes' objects, one at a time: three pieces, shape and colour uniform, drawn as the image
    dataset draws them (bevel intensity times a binary colour)."""
    from slotlab.data.shapes import NUM_TETROMINO_SHAPES, TETROMINO_COLORS, tetromino_pixel_mask, tetromino_tables

    rows, cols, intensity, _ = tetromino_tables()
    for _ in range(TETROMINO_PIECES):
        shape = int(rng.integers(1, NUM_TETROMINO_SHAPES + 1))
        colour = TETROMINO_COLORS[int(rng.integers(len(TETROMINO_COLORS)))]
        mask = tetromino_pixel_mask(shape)
        pixels = np.zeros((*mask.shape, 3), dtype=np.uint8)
        pixels[rows[shape], cols[shape]] = intensity[shape][:, None] * colour[None, :]
        yield mask, pixels


def _video(rng: np.random.Generator, num_frames: int, resolution: int, draw, background: int,
           num_objects: int) -> dict[str, np.ndarray]:
    F, R, G = num_frames, resolution, num_objects
    sprites = [(mask, pixels, _trajectory(rng, mask.shape, R, F)) for mask, pixels in draw(rng, R)]
    n = len(sprites)
    video = np.full((F, R, R, 3), background, dtype=np.uint8)
    labels = np.zeros((F, R, R), dtype=np.uint8)
    motion = np.zeros((F, G, 2), dtype=np.float32)
    for i, (mask, pixels, path) in enumerate(sprites, start=1):  # later sprites are drawn on top
        h, w = mask.shape
        motion[:, i] = path[1:] - path[:-1]
        for t in range(F):
            y, x = path[t]
            video[t, y:y + h, x:x + w][mask] = pixels[mask]
            labels[t, y:y + h, x:x + w][mask] = i
    centers = np.zeros((G, 2), dtype=np.float32)
    boxes = np.zeros((G, 4), dtype=np.float32)
    present = np.zeros((G,), dtype=np.float32)
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels[0] == i)
        if len(ys) < MIN_VISIBLE:
            return {}
        centers[i] = (ys.mean() + 0.5) / R, (xs.mean() + 0.5) / R
        boxes[i] = ys.min() / R, xs.min() / R, (ys.max() + 1) / R, (xs.max() + 1) / R
        present[i] = 1.0
    return {"video": video, "labels": labels, "motion": motion, "centers": centers, "boxes": boxes,
            "present": present}


def _generate(name: str, draw, background: int, num_objects: int, num: int, seed: int, start: int,
              num_frames: int, resolution: int) -> dict[str, np.ndarray]:
    if num < 1 or start < 0 or seed < 0:
        raise ValueError(f"{name}: need num >= 1, start >= 0, seed >= 0; got {num}, {start}, {seed}")
    if num_frames < 1:
        raise ValueError(f"{name}: num_frames must be >= 1, got {num_frames}")
    smallest = 32 if draw is _tetrominoes else 16  # a piece is up to 20 pixels long
    if resolution < smallest:
        raise ValueError(f"{name}: resolution must be >= {smallest} pixels, got {resolution}")
    items = []
    for i in range(start, start + num):
        rng = np.random.default_rng([seed, i])
        item: dict[str, np.ndarray] = {}
        while not item:  # redraw (from the same stream) until every object shows in the first frame
            item = _video(rng, num_frames, resolution, draw, background, num_objects)
        items.append(item)
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


def generate_moving_sprites(num: int, seed: int = 0, start: int = 0, *, num_frames: int = 24,
                            resolution: int = 64) -> dict[str, np.ndarray]:
    """Videos ``start .. start + num - 1`` of the stream ``seed``: ``video`` uint8 (N, F, H, W, 3) RGB and the
    ground truth described in the module docstring. Deterministic: video i depends only on (seed, i)."""
    return _generate("moving_sprites", _sprites, BACKGROUND, NUM_OBJECTS, num, seed, start, num_frames, resolution)


def generate_moving_tetrominoes(num: int, seed: int = 0, start: int = 0, *, num_frames: int = 24,
                                resolution: int = 64) -> dict[str, np.ndarray]:
    """As :func:`generate_moving_sprites`, with three Tetrominoes pieces on black (G = 4)."""
    return _generate("moving_tetrominoes", _tetrominoes, 0, TETROMINO_OBJECTS, num, seed, start, num_frames,
                     resolution)


def forward_flow(labels: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Exact forward optical flow (..., F, H, W, 2) (dy, dx) in pixels from ``labels`` (..., F, H, W) and ``motion``
    (..., F, G, 2): every pixel moves with the object it shows."""
    lead = labels.shape[:-2]
    flat_labels = labels.reshape(-1, labels.shape[-2] * labels.shape[-1]).astype(np.int64)  # (B*F, H*W)
    flat_motion = motion.reshape(-1, *motion.shape[-2:])  # (B*F, G, 2)
    flow = np.take_along_axis(flat_motion, flat_labels[..., None], axis=1)  # (B*F, H*W, 2)
    return flow.reshape(*lead, labels.shape[-2], labels.shape[-1], 2)
