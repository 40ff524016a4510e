"""Reading the colours of a demo-model picture: the background from its border, the foreground from the rest."""

from __future__ import annotations

import numpy as np

from tools.train_demo_model import COLOURS

PALETTE = np.array(list(COLOURS.values()), dtype=float)
NAMES = list(COLOURS)
# A pixel this far (RGB distance) from the background colour counts as foreground.
FOREGROUND_DISTANCE = 90.0


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette name nearest to an RGB value."""
    return NAMES[int(np.argmin(np.linalg.norm(PALETTE - rgb, axis=1)))]


def picture_colours(pixels: np.ndarray) -> tuple[str, str | None]:
    """(background, foreground) palette names; foreground None when nothing stands out from the background."""
    pixels = pixels[..., :3].astype(float)
    border = np.concatenate(
        [
            pixels[:2].reshape(-1, 3),
            pixels[-2:].reshape(-1, 3),
            pixels[:, :2].reshape(-1, 3),
            pixels[:, -2:].reshape(-1, 3),
        ]
    )
    background_rgb = np.median(border, axis=0)
    background = nearest_colour(background_rgb)
    distance = np.linalg.norm(pixels - PALETTE[NAMES.index(background)], axis=-1)
    far = pixels[distance > FOREGROUND_DISTANCE]
    if len(far) < 20:
        return background, None
    return background, nearest_colour(np.median(far, axis=0))
