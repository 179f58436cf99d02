"""Reading any image Pillow opens as 8-bit RGB, and fitting it to a model's square resolution (and back).

Conversion to RGB (docs/your_data.md), applied after the EXIF orientation tag (photos) and to the first frame of
multi-frame files:

- ``RGB``: as is; 16-bit-per-channel colour PNGs arrive here already reduced to 8 bits by Pillow;
- ``L`` (8-bit grey) and ``1`` (bilevel): the grey value copied to the three channels;
- ``I;16*`` and ``I`` (16/32-bit grey, e.g. 16-bit PNGs): value / 257, rounded and clipped (0..65535 -> 0..255),
  then as grey;
- ``F`` (32-bit float grey): clipped to [0, 255] and rounded, then as grey;
- ``P`` (palette): its colours; with a transparent palette entry, as RGBA;
- ``RGBA``, ``LA``, ``PA``: composited over black (alpha 0 = black, 255 = the colour);
- anything else (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ...): Pillow's conversion to RGB.

Fitting to R x R (``data.resize``): ``crop`` scales the shorter side to R and keeps the centre; ``pad`` scales the
longer side to R and pads the rest with black (label 0 = background for masks); ``stretch`` resizes to R x R. An
image already R x R is never resampled. Images resample bilinearly (antialiased when shrinking), label maps by
nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

RESIZE_MODES = ("crop", "pad", "stretch")


class ImageReadError(ValueError):
    """A file that is not a readable image (or mask), with its path in the message."""


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) of the formats this Pillow can open."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path``; ImageReadError naming it otherwise."""
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory; expected {what}")
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found; expected {what}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes); expected {what}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"{path}: cannot read ({err}); expected {what}") from None
    return image


def to_rgb(image: Image.Image) -> np.ndarray:
    """A Pillow image -> uint8 (H, W, 3) RGB by the rules of this module's docstring."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image).astype(np.float64)
        grey = values / 257.0 if mode.startswith("I") else values
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("L", "1"):
        grey = np.asarray(image.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return np.asarray(image, dtype=np.uint8)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:] / 255.0)  # over black
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_rgb(path: str | Path) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, 3) RGB, upright by its EXIF tag; ImageReadError naming the file."""
    path = Path(path)
    image = _open(path, "an image file (PNG, JPEG, ... anything Pillow reads)")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except (OSError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot convert the image ({image.mode}) to RGB: {err}") from None


def read_label_png(path: str | Path) -> np.ndarray:
    """A single-channel 8-bit PNG (mode L or P: the values themselves) -> uint8 (H, W)."""
    path = Path(path)
    image = _open(path, "a single-channel 8-bit PNG mask (0 = background, 1..n = objects)")
    if image.mode not in ("L", "P", "1"):
        raise ImageReadError(f"{path}: mask has mode {image.mode}; expected a single-channel 8-bit PNG "
                             "(mode L or P: 0 = background, 1..n = objects)")
    return np.asarray(image, dtype=np.uint8)  # mode 1 gives 0 / 1


@dataclass(frozen=True)
class Fit:
    """Where an (H, W) image lands in the R x R model input: it is resized to ``resized`` (h, w) and then
    ``model[y, x] = resized[y + dy, x + dx]`` (outside ``resized``: black padding). ``crop`` has dy, dx >= 0,
    ``pad`` <= 0, ``stretch`` 0."""

    size: tuple[int, int]
    resized: tuple[int, int]
    dy: int
    dx: int
    resolution: int


def fit(size: tuple[int, int], resolution: int, mode: str) -> Fit:
    """The placement of an image of ``size`` (H, W) in ``resolution`` x ``resolution`` under ``mode``."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"data.resize must be one of {list(RESIZE_MODES)}, got {mode!r}")
    H, W = size
    R = resolution
    if mode == "stretch" or (H, W) == (R, R):
        return Fit((H, W), (R, R), 0, 0, R)
    if mode == "crop":
        s = R / min(H, W)
        h, w = max(R, round(H * s)), max(R, round(W * s))
    else:
        s = R / max(H, W)
        h, w = min(R, max(1, round(H * s))), min(R, max(1, round(W * s)))
    return Fit((H, W), (h, w), (h - R) // 2, (w - R) // 2, R)


def _place(array: np.ndarray, f: Fit) -> np.ndarray:
    """Cut / pad the resized (h, w, ...) array into the (R, R, ...) model frame (padding 0)."""
    R = f.resolution
    out = np.zeros((R, R, *array.shape[2:]), dtype=array.dtype)
    y0, x0 = max(0, -f.dy), max(0, -f.dx)  # where the array starts in the model frame
    sy, sx = max(0, f.dy), max(0, f.dx)  # where the model frame starts in the array
    h, w = min(R - y0, array.shape[0] - sy), min(R - x0, array.shape[1] - sx)
    out[y0 : y0 + h, x0 : x0 + w] = array[sy : sy + h, sx : sx + w]
    return out


def fit_image(rgb: np.ndarray, resolution: int, mode: str) -> tuple[np.ndarray, Fit]:
    """uint8 (H, W, 3) -> uint8 (R, R, 3) model input and its placement."""
    f = fit(rgb.shape[:2], resolution, mode)
    if f.resized != f.size:
        rgb = np.asarray(Image.fromarray(rgb).resize(f.resized[::-1], Image.BILINEAR, reducing_gap=None))
    return _place(rgb, f), f


def fit_labels(labels: np.ndarray, f: Fit) -> np.ndarray:
    """uint8 (H, W) label map -> uint8 (R, R), nearest neighbour, with the placement ``f`` of its image."""
    if f.resized != f.size:
        labels = np.asarray(Image.fromarray(labels).resize(f.resized[::-1], Image.NEAREST))
    return _place(labels, f)


UNSEEN = 255  # label-map value of input pixels the model never saw (outside the centre crop of data.resize=crop)


def unfit_masks(masks: torch.Tensor, f: Fit) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft masks (K, R, R) in the model frame -> (K, H, W) at the original size (bilinear) and a bool (H, W) of the
    pixels the model saw (False only outside a centre crop)."""
    K, R = masks.shape[0], f.resolution
    h, w = f.resized
    canvas = masks.new_zeros(K + 1, h, w)  # the last channel marks what the model saw
    y0, x0 = max(0, f.dy), max(0, f.dx)  # where the model frame starts in the resized image
    sy, sx = max(0, -f.dy), max(0, -f.dx)  # where the resized image starts in the model frame
    ch, cw = min(h - y0, R - sy), min(w - x0, R - sx)
    canvas[:K, y0 : y0 + ch, x0 : x0 + cw] = masks[:, sy : sy + ch, sx : sx + cw]
    canvas[K, y0 : y0 + ch, x0 : x0 + cw] = 1.0
    if (h, w) != f.size:
        canvas = torch.nn.functional.interpolate(canvas[None], size=f.size, mode="bilinear", align_corners=False)[0]
    return canvas[:K], canvas[K] >= 0.5
