"""``moving_sprites``: Multi-dSprites-like videos generated on the fly, with exact ground truth for video models.

Each video shows 2-5 sprites (square, ellipse, triangle; random size and colour) on a grey background. Every
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

import numpy as np

NUM_OBJECTS = 6  # G: the background and up to 5 sprites
MIN_SPRITES, MAX_SPRITES = 2, 5
BACKGROUND = 128  # grey
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


def _trajectory(rng: np.random.Generator, size: int, resolution: int, num_frames: int) -> np.ndarray:
    """Integer top-left positions (F + 1, 2) of a sprite of ``size`` bouncing inside the frame."""
    hi = resolution - size
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
            elif nxt[a] > hi:
                nxt[a], vel[a] = 2 * hi - nxt[a], -vel[a]
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


def _video(rng: np.random.Generator, num_frames: int, resolution: int) -> dict[str, np.ndarray]:
    F, R, G = num_frames, resolution, NUM_OBJECTS
    n = int(rng.integers(MIN_SPRITES, MAX_SPRITES + 1))
    sprites = []
    for _ in range(n):
        size = int(rng.integers(R // 7, R // 3.5 + 1))
        mask = sprite_mask(SHAPES[int(rng.integers(len(SHAPES)))], size)
        sprites.append((mask, _colour(rng), _trajectory(rng, size, R, F)))
    video = np.full((F, R, R, 3), BACKGROUND, dtype=np.uint8)
    labels = np.zeros((F, R, R), dtype=np.uint8)
    motion = np.zeros((F, G, 2), dtype=np.float32)
    for i, (mask, colour, path) in enumerate(sprites, start=1):  # later sprites are drawn on top
        s = mask.shape[0]
        motion[:, i] = path[1:] - path[:-1]
        for t in range(F):
            y, x = path[t]
            video[t, y:y + s, x:x + s][mask] = colour
            labels[t, y:y + s, x:x + s][mask] = i
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


def generate_moving_sprites(num: int, seed: int = 0, start: int = 0, *, num_frames: int = 24,
                            resolution: int = 64) -> dict[str, np.ndarray]:
    """Videos ``start .. start + num - 1`` of the stream ``seed``: ``video`` uint8 (N, F, H, W, 3) RGB and the
    ground truth described in the module docstring. Deterministic: video i depends only on (seed, i)."""
    if num < 1 or start < 0 or seed < 0:
        raise ValueError(f"moving_sprites: need num >= 1, start >= 0, seed >= 0; got {num}, {start}, {seed}")
    if num_frames < 1:
        raise ValueError(f"moving_sprites: num_frames must be >= 1, got {num_frames}")
    if resolution < 16:
        raise ValueError(f"moving_sprites: resolution must be >= 16 pixels, got {resolution}")
    items = []
    for i in range(start, start + num):
        rng = np.random.default_rng([seed, i])
        item: dict[str, np.ndarray] = {}
        while not item:  # redraw (from the same stream) until every sprite shows in the first frame
            item = _video(rng, num_frames, resolution)
        items.append(item)
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


def forward_flow(labels: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Exact forward optical flow (..., F, H, W, 2) (dy, dx) in pixels from ``labels`` (..., F, H, W) and ``motion``
    (..., F, G, 2): every pixel moves with the object it shows."""
    lead = labels.shape[:-2]
    flat_labels = labels.reshape(-1, labels.shape[-2] * labels.shape[-1]).astype(np.int64)  # (B*F, H*W)
    flat_motion = motion.reshape(-1, *motion.shape[-2:])  # (B*F, G, 2)
    flow = np.take_along_axis(flat_motion, flat_labels[..., None], axis=1)  # (B*F, H*W, 2)
    return flow.reshape(*lead, labels.shape[-2], labels.shape[-1], 2)
