"""The built-in synthetic ``shapes`` data (no download, no files): ten classes of simple coloured shapes
(`SHAPES_CLASSES`) on noisy backgrounds, generated with numpy at any size, one shape per image for classification
(`rendered`, behind ``inputs.classification.shapes``) or 1–3 boxed shapes per image for detection (`shapes_boxes`).
Contents are fixed by their seeds; the scene does not depend on the image size, only its rendering."""
from __future__ import annotations

import functools

import numpy as np

SHAPES_CLASSES = ("circle", "square", "triangle", "cross", "ring", "hbars", "vbars", "diamond", "ellipse", "star")
SHAPES_SIZES = {"train": 2000, "test": 500}
SHAPES_SEED = 0


def shapes_boxes(n: int, image_size: int, seed: int) -> tuple[np.ndarray, list[list[tuple[int, int, int, int, int]]]]:
    """Synthetic detection images: 1–3 non-overlapping shapes each (one per quadrant).

    Returns:
        uint8 (n, size, size, 3) images and, per image, boxes ``(class, x0, y0, x1, y1)`` in pixels: the tight box of
        the drawn shape, x1/y1 exclusive.
    """
    rng = np.random.default_rng([seed, 2])
    counts = rng.integers(1, 4, n)
    quadrants = np.argsort(rng.random((n, 4)), axis=1)[:, :3]
    radius = rng.uniform(0.10, 0.22, (n, 3))
    cx = (quadrants % 2) * 0.5 + rng.uniform(radius, 0.5 - radius)
    cy = (quadrants // 2) * 0.5 + rng.uniform(radius, 0.5 - radius)
    classes = np.where(np.arange(3) < counts[:, None], rng.integers(0, len(SHAPES_CLASSES), (n, 3)), -1)
    images, masks = _render(rng, image_size, classes, cx, cy, radius)
    boxes = [[(int(c), *_tight_box(m)) for c, m in zip(classes[i], masks[i]) if c >= 0 and m.any()] for i in range(n)]
    return images, boxes


# ---------------------------------------------------------------------------------------------------------------
# The shapes generator (numpy, vectorised over images; one mask function per class in local units of the radius,
# u to the right and v downwards, every shape inside |u|, |v| ≤ 1)


def _bars(w: np.ndarray, other: np.ndarray) -> np.ndarray:
    return (np.maximum(abs(w), abs(other)) <= 0.9) & (np.floor((w + 0.9) / 0.36) % 2 == 0)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hypot(u, v) <= 0.6 + 0.4 * np.cos(5 * np.arctan2(u, -v))


_MASKS = (
    lambda u, v: u * u + v * v <= 1.0,  # circle
    lambda u, v: np.maximum(abs(u), abs(v)) <= 0.8,  # square
    lambda u, v: (v >= -1.0) & (v <= 0.8) & (abs(u) <= (v + 1.0) * 0.5),  # triangle, apex up
    lambda u, v: ((abs(u) <= 0.3) & (abs(v) <= 1.0)) | ((abs(v) <= 0.3) & (abs(u) <= 1.0)),  # cross
    lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55 ** 2),  # ring
    lambda u, v: _bars(v, u),  # three horizontal bars
    lambda u, v: _bars(u, v),  # three vertical bars
    lambda u, v: abs(u) + abs(v) <= 1.0,  # diamond
    lambda u, v: u * u + 4.0 * v * v <= 1.0,  # ellipse, 2:1 horizontal
    _star,  # five-pointed
)
_NOISE = 55.0  # width of the uniform pixel noise (standard deviation 16)
_RENDER_CHUNK = 256  # images per vectorised step, bounding memory at large sizes


def _render(rng: np.random.Generator, size: int, classes: np.ndarray, cx: np.ndarray, cy: np.ndarray,
            radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draws shapes ``(n, k)`` (class -1: none) on noisy backgrounds; returns uint8 images and (n, k, S, S) masks.

    Centres and radii are fractions of the image side. Each shape's colour differs from the background by 80–176
    in every channel, so shapes stay visible whatever the colours.
    """
    n, k = classes.shape
    cx, cy, radius = (a.astype(np.float32) for a in (cx, cy, radius))
    background = rng.uniform(0, 256, (n, 3)).astype(np.float32)
    colours = ((background[:, None] + rng.uniform(80, 176, (n, k, 3))) % 256).astype(np.float32)
    grid = ((np.arange(size) + 0.5) / size).astype(np.float32)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, k, size, size), bool)
    for lo in range(0, n, _RENDER_CHUNK):
        part = slice(lo, min(n, lo + _RENDER_CHUNK))
        canvas = np.broadcast_to(background[part, None, None], (part.stop - lo, size, size, 3)).copy()
        for j in range(k):
            r = radius[part, j, None, None]
            u = (grid[None, None, :] - cx[part, j, None, None]) / r
            v = (grid[None, :, None] - cy[part, j, None, None]) / r
            masks[part, j] = _shape_masks(classes[part, j], *np.broadcast_arrays(u, v))
            np.copyto(canvas, colours[part, j, None, None], where=masks[part, j, ..., None])
        noise = rng.random(canvas.shape, dtype=np.float32)  # uniform: several times faster than normal
        canvas += _NOISE * (noise - 0.5) + 0.5  # + 0.5: the uint8 cast truncates
        images[part] = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
    return images, masks


def _shape_masks(classes: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-image masks (n, S, S) of each image's class evaluated at local coordinates u, v."""
    masks = np.zeros(u.shape, bool)
    for c, mask in enumerate(_MASKS):
        idx = np.flatnonzero(classes == c)
        if idx.size:
            masks[idx] = mask(u[idx], v[idx])
    return masks


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@functools.lru_cache(maxsize=8)
def rendered(split: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The classification images of ``split`` (`SHAPES_SIZES`) at ``size``: uint8 (N, size, size, 3) and int32 (N,)
    balanced labels, one shape per image; cached and read-only."""
    n = SHAPES_SIZES[split]
    rng = np.random.default_rng([seed, list(SHAPES_SIZES).index(split)])
    labels = rng.permutation(np.arange(n) % len(SHAPES_CLASSES)).astype(np.int32)
    radius = rng.uniform(0.25, 0.40, n)
    cx, cy = (rng.uniform(radius, 1.0 - radius) for _ in range(2))
    images, _ = _render(rng, size, labels[:, None], cx[:, None], cy[:, None], radius[:, None])
    images.flags.writeable = labels.flags.writeable = False
    return images, labels
