"""The app's favicon, drawn in memory: a `:material/...:` page icon would be fetched from a
font CDN, and the app must not call any host but its own server."""

from __future__ import annotations

import numpy as np
from PIL import Image


def favicon() -> Image.Image:
    """Return a 32x32 RGBA image of a small database cylinder."""
    size = 32
    img = np.zeros((size, size, 4), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    body = (xx >= 6) & (xx <= 25) & (yy >= 7) & (yy <= 25)
    cx, rx, ry = 15.5, 10.0, 3.5
    for cy in (7.0, 25.0, 13.0, 19.0):
        ellipse = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        body |= ellipse
    img[body] = (255, 75, 75, 255)
    for cy in (7.0, 13.0, 19.0):
        rim = np.abs(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 - 1.0) < 0.25
        img[rim & (yy >= cy)] = (255, 255, 255, 255)
    return Image.fromarray(img, mode="RGBA")
