"""Small pictures of big images: pick a pyramid level, pool it to thumbnail size, colour it, outline the tissue.

A cohort may hold 2,000 whole-slide images, so a thumbnail never reads more than it must:

- :func:`pick_level` chooses, over every stored resolution and pyramid level of an image, the
  smallest level that is still at least as large as the thumbnail (from the metadata alone), and
  the pooling factor that brings it closest to the thumbnail size;
- :func:`pooled` reads that level block by block (at most ``block`` x ``block`` pixels of all
  channels at a time) and averages ``f x f`` pixels into one, so memory stays bounded even when an
  image has no pyramid and level 0 is all there is;
- :func:`composite` maps three channels to red, green and blue (each scaled to its own 1st-99.5th
  percentile inside the tissue), :func:`outline` draws the tissue mask's edge on it, and
  :func:`png_data_uri` inlines the result in HTML.

Examples
--------
>>> import numpy as np
>>> rgb = composite(np.stack([np.eye(4), np.zeros((4, 4)), np.ones((4, 4))]))
>>> rgb.shape, rgb.dtype, int(rgb[..., 0].max()), int(rgb[..., 1].max())
((4, 4, 3), dtype('uint8'), 255, 0)
>>> png_data_uri(rgb)[:22]
'data:image/png;base64,'
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spora_sd.io.images import CheckedLevel, open_level, read_image_metadata
from spora_sd.layout import format_resolution

__all__ = ["LevelChoice", "composite", "outline", "pick_level", "png_data_uri", "pooled", "resize_mask"]

OUTLINE_RGB = (255, 230, 0)  # yellow: visible on dark fluorescence composites and on H&E


@dataclass(frozen=True)
class LevelChoice:
    """The pyramid level a thumbnail is made from, and its pooling factor."""

    image: Path
    mpp: float  # the resolution folder's microns per pixel (of level 0)
    level: str
    shape: tuple[int, int, int]  # (c, y, x) of that level
    factor: int  # pool factor x factor pixels into one

    @property
    def pixels(self) -> int:
        return self.shape[1] * self.shape[2]

    def describe(self) -> str:
        """e.g. ``'1_0mpp level 1 (154 x 143 px)'``, shown under the thumbnail."""
        return f"{format_resolution(self.mpp)} level {self.level} ({self.shape[1]} x {self.shape[2]} px)"


def pick_level(images: Sequence[tuple[float, Path]], size: int) -> tuple[LevelChoice, CheckedLevel]:
    """The smallest level, over ``(mpp, image)`` candidates, whose longer side is at least ``size``.

    When every level is smaller than ``size``, the largest one is taken. Only metadata is read.

    Raises
    ------
    CohortFormatError
        An image's metadata or a level is unreadable.
    """
    found: list[tuple[LevelChoice, CheckedLevel]] = []
    for mpp, image in images:
        meta = read_image_metadata(image)
        for level_path in meta.level_paths:
            level = open_level(image, level_path)
            shape = tuple(int(n) for n in level.shape)
            # the factor that brings the longer side closest to `size` (never pooling away a whole axis)
            factor = max(1, min(round(max(shape[1:]) / size), min(shape[1:]) or 1))
            found.append((LevelChoice(Path(image), float(mpp), level_path, shape, factor), level))
    if not found:
        raise ValueError("pick_level: no image given")
    big_enough = [f for f in found if max(f[0].shape[1:]) >= size]
    if big_enough:
        return min(big_enough, key=lambda f: f[0].pixels)
    return max(found, key=lambda f: f[0].pixels)


def pooled(level: CheckedLevel, factor: int, *, block: int = 1024) -> np.ndarray:
    """``level`` averaged over ``factor x factor`` pixels, as float32 ``(c, y // factor, x // factor)``.

    Reads blocks of about ``block x block`` pixels (all channels: a Zarr chunk holds them all), whose
    sides are multiples of ``factor`` so that no pooled pixel straddles two blocks. Edge rows and
    columns that do not fill a whole ``factor`` are left out.
    """
    c, height, width = (int(n) for n in level.shape)
    h, w = height // factor, width // factor
    out = np.zeros((c, h, w), dtype=np.float32)
    step = max(1, block // factor) * factor
    for y0 in range(0, h * factor, step):
        y1 = min(y0 + step, h * factor)
        for x0 in range(0, w * factor, step):
            x1 = min(x0 + step, w * factor)
            tile = level.read([(0, c), (y0, y1), (x0, x1)]).astype(np.float32, copy=False)
            by, bx = (y1 - y0) // factor, (x1 - x0) // factor
            out[:, y0 // factor : y0 // factor + by, x0 // factor : x0 // factor + bx] = tile.reshape(
                c, by, factor, bx, factor
            ).mean(axis=(2, 4))
    return out


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask to ``shape`` (masks may be stored at another resolution).

    >>> resize_mask(np.array([[0, 1], [1, 1]]), (4, 4)).astype(int).tolist()[0]
    [0, 0, 1, 1]
    """
    rows = np.minimum((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0], mask.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1], mask.shape[1] - 1).astype(int)
    return np.asarray(mask)[np.ix_(rows, cols)] != 0


def _scaled(channel: np.ndarray, inside: np.ndarray | None) -> np.ndarray:
    """One channel in [0, 1]: its 1st-99.5th percentile (inside the tissue, when known) mapped to 0-1."""
    values = channel[inside] if inside is not None and inside.any() else channel.ravel()
    if not values.size:
        return np.zeros_like(channel)
    lo, hi = np.percentile(values, [1.0, 99.5])
    if not hi > lo:
        # a flat channel (a failed stain, an empty tissue) stays dark instead of being stretched
        return np.zeros_like(channel)
    return np.clip((channel - lo) / (hi - lo), 0.0, 1.0)


def composite(channels: np.ndarray, inside: np.ndarray | None = None, *, rescale: bool = True) -> np.ndarray:
    """An ``(y, x, 3)`` uint8 picture from up to three ``(y, x)`` channels (red, green, blue).

    With ``rescale`` (fluorescence, mass cytometry) each channel is stretched separately; without it
    (H&E, already 8-bit RGB) values are clipped to 0-255. Missing colours (fewer than three
    channels) stay black.
    """
    channels = np.asarray(channels, dtype=np.float32)
    rgb = np.zeros((*channels.shape[1:], 3), dtype=np.float32)
    for i, channel in enumerate(channels[:3]):
        rgb[..., i] = _scaled(channel, inside) if rescale else np.clip(channel, 0, 255) / 255.0
    if len(channels) == 1:  # one channel (IHC): grey, not red
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
    return np.round(rgb * 255).astype(np.uint8)


def outline(rgb: np.ndarray, mask: np.ndarray, color: Sequence[int] = OUTLINE_RGB) -> np.ndarray:
    """``rgb`` with the edge pixels of the boolean ``mask`` (same height and width) painted ``color``.

    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
    >>> int((outline(np.zeros((5, 5, 3), np.uint8), m)[..., 0] > 0).sum())  # the ring around the centre
    8
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    out = rgb.copy()
    out[mask & ~interior] = np.asarray(color, dtype=np.uint8)
    return out


def png_data_uri(pixels: np.ndarray, *, palette: bool = True) -> str:
    """A ``data:image/png;base64,...`` URI of a uint8 ``(y, x)`` or ``(y, x, 3)`` array (inlined in HTML).

    With ``palette``, an RGB picture is reduced to 256 colours (median cut, no dithering) first: half
    the bytes of a true-colour PNG for a noisy composite, which matters for a page of 2,000 tissues,
    and no visible loss at thumbnail size.
    """
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if palette and image.mode == "RGB":
        image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
