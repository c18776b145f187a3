"""Anchors of the YOLOv3 head: YOLOv3's COCO anchors scaled to the input size, or k-means on the training boxes with
distance ``1 − IoU`` of shapes aligned at the origin (YOLOv2 §"Dimension Clusters", used again by YOLOv3).

Anchors are float32 ``(9, 2)`` ``(w, h)`` in network-input pixels sorted by area (three per level, finest first).
NumPy only.
"""
from __future__ import annotations

import numpy as np

from common.errors import InputError
from detection.iou import wh_iou_matrix

COCO_ANCHORS_416 = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
RESTARTS = 5
MODES = ("kmeans", "default")


class AnchorError(InputError):
    """The training boxes cannot give k-means anchors."""


def default_anchors(input_size: int) -> np.ndarray:
    """YOLOv3's COCO anchors scaled from 416 to ``input_size``: float32 (9, 2) ``(w, h)`` pixels sorted by area."""
    a = np.asarray(COCO_ANCHORS_416, np.float32) * np.float32(input_size / 416.0)
    return a[np.argsort(a.prod(1), kind="stable")]


def _kmeans_once(wh: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100) -> np.ndarray:
    # k-means++ seeding with d = 1 − IoU, then Lloyd iterations (mean of each cluster's members).
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - wh_iou_matrix(wh, np.asarray(centres)).max(1)
        centres.append(wh[rng.choice(len(wh), p=d * d / np.sum(d * d))])
    centres = np.asarray(centres)
    assign = None
    for _ in range(iterations):
        iou = wh_iou_matrix(wh, centres)
        new = iou.argmax(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            # An emptied cluster restarts at the box its centre fits worst.
            centres[j] = members.mean(0) if len(members) else wh[iou.max(1).argmin()]
    return centres


def kmeans_anchors(wh: np.ndarray, k: int = 9, seed: int = 0) -> np.ndarray:
    """Anchors by k-means on box shapes with distance ``1 − IoU`` (boxes aligned at the origin), as in YOLOv2/v3.

    k-means++ seeding from ``np.random.default_rng(seed)``, `RESTARTS` restarts, the one with the highest mean
    best-IoU wins: deterministic for a seed.

    Args:
        wh: (N, 2) positive box widths and heights (e.g. input pixels after letterboxing).
        k: number of anchors (9 for the three YOLOv3 levels).
        seed: RNG seed.

    Returns:
        float32 (k, 2) ``(w, h)`` sorted by area.

    Raises:
        ValueError: ``wh`` is not (N, 2) positive and finite, or has fewer than ``k`` distinct shapes.
    """
    wh = np.asarray(wh, np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"kmeans_anchors: wh must have shape (N, 2), got {wh.shape}")
    if not (np.all(np.isfinite(wh)) and np.all(wh > 0)):
        raise ValueError("kmeans_anchors: every width and height must be positive and finite")
    distinct = len(np.unique(wh, axis=0))
    if k < 1 or distinct < k:
        raise ValueError(f"kmeans_anchors: needs at least k={k} distinct box shapes, got {distinct} "
                         f"(from {len(wh)} boxes)")
    rng = np.random.default_rng(seed)
    best, best_fit = None, -1.0
    for _ in range(RESTARTS):
        centres = _kmeans_once(wh, k, rng)
        fit = float(wh_iou_matrix(wh, centres).max(1).mean())
        if fit > best_fit:
            best, best_fit = centres, fit
    return best[np.argsort(best.prod(1), kind="stable")].astype(np.float32)


def compute_anchors(records, input_size: int, mode: str, seed: int) -> np.ndarray:
    """The (9, 2) anchors of a training run.

    Args:
        records: training ``inputs.voc.Record`` s; their non-difficult boxes, scaled by each image's letterbox factor
            to input pixels, are clustered.
        input_size: S.
        mode: ``"kmeans"`` (`kmeans_anchors` of those boxes) or ``"default"`` (`default_anchors`).
        seed: k-means seed.

    Returns:
        float32 (9, 2) ``(w, h)`` input pixels sorted by area.

    Raises:
        AnchorError: k-means is impossible (fewer than 9 distinct box shapes); the message suggests the defaults.
    """
    if mode == "default":
        return default_anchors(input_size)
    wh = [(r.boxes[~r.difficult, 2:] - r.boxes[~r.difficult, :2]) * min(input_size / r.width, input_size / r.height)
          for r in records]
    try:
        return kmeans_anchors(np.concatenate(wh), 9, seed)
    except ValueError as e:
        raise AnchorError(f"--anchors=kmeans: {e}; use --anchors=default") from None
