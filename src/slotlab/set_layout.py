"""The layout of a set-prediction target vector: where the coordinates, the categorical blocks and the flag are.

A scene's target is (M, P): one row per object, padded with all-zero rows. Every row is
``[coordinates | one-hot block | one-hot block | ... | real-object flag]``, all values in [0, 1]. The loss does not
need the layout (it compares whole vectors); the AP metric and the pictures do.

Two layouts ship with slotlab:

- :data:`CLEVR_LAYOUT` (P = 19), the official order of ``google-research/slot_attention`` data.py:
  [0:3] 3d_coords as (c + 3) / 6, [3:5] size, [5:7] material, [7:10] shape, [10:18] colour, [18] real object.
  Distances for AP are measured in the original [-3, 3] units, hence ``coord_scale = 6``.
- :data:`SPRITES_LAYOUT` (P = 14), slotlab's built-in 2-D sprites (``data/sprites_set.py``):
  [0:2] centre (x = column, y = row) / image size, [2:4] size (small, large), [4:7] shape (square, ellipse,
  heart), [7:13] colour (red, yellow, green, cyan, blue, magenta), [13] real object. ``coord_scale = 6`` too, so
  the image is 6 units wide like CLEVR's scene and the paper's thresholds (1, 0.5, 0.25, 0.125) keep their meaning
  relative to the scene: 0.125 units = 1/48 of the image side (1.3 px at 64 px).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SetLayout:
    """Column ranges of a target vector of width ``width``."""

    name: str
    coords: tuple[int, int]  # [start, stop) of the continuous coordinates
    blocks: tuple[tuple[str, int, int, tuple[str, ...]], ...]  # (attribute, start, stop, class names)
    flag: int  # index of the real-object flag (also the prediction's confidence)
    coord_scale: float  # distance for AP = || (coords_true - coords_pred) * coord_scale ||_2
    image_coords: bool = False  # coords[0:2] are (x, y) / image side, so they can be drawn on the image

    @property
    def width(self) -> int:
        return self.flag + 1

    def check(self) -> None:
        cols = [self.coords, *[(a, b) for _, a, b, _ in self.blocks], (self.flag, self.flag + 1)]
        expected = 0
        for a, b in cols:
            if a != expected or b <= a:
                raise ValueError(f"layout {self.name}: column ranges must tile [0, {self.width}), got {cols}")
            expected = b
        for attr, a, b, names in self.blocks:
            if len(names) != b - a:
                raise ValueError(f"layout {self.name}: block {attr} spans {b - a} columns but names {len(names)}")


CLEVR_LAYOUT = SetLayout(
    name="clevr",
    coords=(0, 3),
    blocks=(
        ("size", 3, 5, ("small", "large")),
        ("material", 5, 7, ("rubber", "metal")),
        ("shape", 7, 10, ("cube", "sphere", "cylinder")),
        ("color", 10, 18, ("gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan")),
    ),
    flag=18,
    coord_scale=6.0,
)

SPRITES_LAYOUT = SetLayout(
    name="sprites",
    coords=(0, 2),
    blocks=(
        ("size", 2, 4, ("small", "large")),
        ("shape", 4, 7, ("square", "ellipse", "heart")),
        ("color", 7, 13, ("red", "yellow", "green", "cyan", "blue", "magenta")),
    ),
    flag=13,
    coord_scale=6.0,
    image_coords=True,
)

LAYOUTS = {layout.name: layout for layout in (CLEVR_LAYOUT, SPRITES_LAYOUT)}
for _layout in LAYOUTS.values():
    _layout.check()


def get_layout(name: str) -> SetLayout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown set layout {name!r}; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]
