"""Multi-dSprites-like scenes (the ``colored_on_grayscale`` variant of DeepMind's Multi-dSprites).

Each 64x64 scene has a uniform grey background (one random grey level per scene) and 2-5 sprites (number uniform),
painted in order so later sprites occlude earlier ones. A sprite is a square, ellipse or heart (ids 1, 2, 3 as in
dSprites) with a uniformly random HSV colour, scale in [0.5, 1], orientation in [0, 2*pi) and centre position in
[0, 1]^2, rasterised with hard edges. Sizes and conventions are documented in ``docs/datasets_builtin.md``.
"""

from __future__ import annotations

import numpy as np

from slotlab.data.shapes import check_generation_args, hsv_to_rgb, scene_rng, sprite_masks

IMAGE_SIZE = 64
MIN_SPRITES, MAX_SPRITES = 2, 5
NUM_OBJECTS = MAX_SPRITES + 1  # G: background + up to 5 sprites
MIN_SCALE, MAX_SCALE = 0.5, 1.0
MARGIN = 8.0  # px: x, y in [0, 1] map the sprite centre to [MARGIN, IMAGE_SIZE - MARGIN]
_CHUNK = 256  # scenes rasterised at once; bounds the (sprites, 64, 64) float temporaries to a few tens of MB


def _sample_scene(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """Draw one scene: (grey level 0..255, float32 (n, 8) rows shape, x, y, scale, orientation, r, g, b).

    The colour columns are the painted uint8 colour divided by 255, so ``round(color * 255)`` recovers it exactly.
    """
    grey = int(np.round(rng.random() * 255.0))
    n = int(rng.integers(MIN_SPRITES, MAX_SPRITES + 1))
    shape = rng.integers(1, 4, size=n)
    x, y = rng.random(n), rng.random(n)
    scale = rng.uniform(MIN_SCALE, MAX_SCALE, size=n)
    orientation = rng.uniform(0.0, 2.0 * np.pi, size=n)
    orientation[orientation.astype(np.float32) >= np.float32(2.0 * np.pi)] = 0.0  # keep [0, 2pi) after float32
    rgb8 = np.round(hsv_to_rgb(rng.random((n, 3))) * 255.0)
    sprites = np.column_stack([shape, x, y, scale, orientation, rgb8 / 255.0]).astype(np.float32)
    return grey, sprites


def _sample_params(num: int, seed: int, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample scenes start..start+num-1: grey uint8 (num,), count int64 (num,), sprites float32 (num, 5, 8)."""
    grey = np.zeros(num, dtype=np.uint8)
    count = np.zeros(num, dtype=np.int64)
    sprites = np.zeros((num, MAX_SPRITES, 8), dtype=np.float32)
    for i in range(num):
        grey[i], scene = _sample_scene(scene_rng(seed, start + i))
        count[i] = len(scene)
        sprites[i, : len(scene)] = scene
    return grey, count, sprites


def _paint_labels(count: np.ndarray, sprites: np.ndarray) -> np.ndarray:
    """Per-pixel index of the topmost sprite, uint8 (n, 64, 64), for one chunk; count (n,), sprites (n, 5, 8)."""
    n = len(count)
    scene, slot = np.nonzero(np.arange(MAX_SPRITES)[None, :] < count[:, None])  # present sprites, slot order
    params = sprites[scene, slot]  # (m, 8)
    cx = MARGIN + params[:, 1] * (IMAGE_SIZE - 2 * MARGIN)  # column of the centre in pixels
    cy = MARGIN + params[:, 2] * (IMAGE_SIZE - 2 * MARGIN)  # row of the centre in pixels
    masks = sprite_masks(
        params[:, 0].astype(np.int64), cx, cy, params[:, 3], params[:, 4], IMAGE_SIZE, IMAGE_SIZE
    )  # (m, 64, 64)
    labels = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for k in range(MAX_SPRITES):  # paint order: slot 0 first, later slots on top
        sel = np.flatnonzero(slot == k)
        target = scene[sel]
        labels[target] = np.where(masks[sel], np.uint8(k + 1), labels[target])
    return labels


def _visibility(labels: np.ndarray) -> np.ndarray:
    """float32 (n, G): 1 for the background and every object with at least one visible pixel."""
    n = len(labels)
    flat = labels.reshape(n, -1).astype(np.int64) + NUM_OBJECTS * np.arange(n)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n * NUM_OBJECTS).reshape(n, NUM_OBJECTS)
    visibility = (counts > 0).astype(np.float32)
    visibility[:, 0] = 1.0
    return visibility


def _factors(grey: np.ndarray, count: np.ndarray, sprites: np.ndarray) -> dict[str, np.ndarray]:
    """Factor arrays (num, G[, 3]) float32; row 0 is the background (colour = its grey level, rest 0)."""
    num = len(grey)
    present = (np.arange(MAX_SPRITES)[None, :] < count[:, None])[..., None]  # (num, 5, 1)
    table = np.where(present, sprites, 0.0).astype(np.float32)  # (num, 5, 8), padding rows zeroed
    out: dict[str, np.ndarray] = {}
    for j, key in enumerate(("shape", "x", "y", "scale", "orientation")):
        out[key] = np.zeros((num, NUM_OBJECTS), dtype=np.float32)
        out[key][:, 1:] = table[..., j]
    color = np.zeros((num, NUM_OBJECTS, 3), dtype=np.float32)
    color[:, 0] = (grey.astype(np.float32) / 255.0)[:, None]
    color[:, 1:] = table[..., 5:8]
    out["color"] = color
    return out


def _render_image(grey: np.ndarray, color: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Look up every pixel's colour: uint8 (n, 64, 64, 3) from labels (n, 64, 64) and color (n, G, 3) in [0, 1]."""
    palette = np.round(color * 255.0).astype(np.uint8)  # (n, G, 3); row 0 is the grey background
    palette[:, 0] = grey[:, None]
    return palette[np.arange(len(labels))[:, None, None], labels]


def generate_multi_dsprites(num: int, seed: int, start: int = 0) -> dict[str, np.ndarray]:
    """Generate ``num`` Multi-dSprites-like scenes with indices start..start+num-1.

    Scene i depends only on (seed, start + i), so any chunking gives the same scenes. Returns NumPy arrays:
    ``image`` uint8 (num, 64, 64, 3), ``labels`` uint8 (num, 64, 64) (0 = background, k = k-th painted sprite),
    ``visibility`` float32 (num, 6), factors ``x``, ``y``, ``shape``, ``scale``, ``orientation`` float32 (num, 6)
    and ``color`` float32 (num, 6, 3).
    """
    num, seed, start = check_generation_args(num, seed, start)
    grey, count, sprites = _sample_params(num, seed, start)
    factors = _factors(grey, count, sprites)
    image = np.zeros((num, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.zeros((num, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    visibility = np.zeros((num, NUM_OBJECTS), dtype=np.float32)
    for lo in range(0, num, _CHUNK):  # chunked so temporaries stay small for any num
        part = slice(lo, min(lo + _CHUNK, num))
        labels[part] = _paint_labels(count[part], sprites[part])
        image[part] = _render_image(grey[part], factors["color"][part], labels[part])
        visibility[part] = _visibility(labels[part])
    return {"image": image, "labels": labels, "visibility": visibility, **factors}
