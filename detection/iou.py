"""The one intersection-over-union of the detection code: one NumPy definition (metrics, anchor k-means) and one
TensorFlow definition (target assignment, the loss's GIoU and its ignore mask).

Boxes are ``(x0, y0, x1, y1)`` in continuous coordinates: area = (x1 − x0)(y1 − y0), no VOC "+1". Box shapes
``(w, h)`` compared "aligned at the origin" (YOLOv2/v3 anchor matching and k-means) are the boxes ``(0, 0, w, h)``.
GIoU is Eq. (1)/Alg. 1 of Rezatofighi et al. 2019: ``IoU − (|C| − |A ∪ B|) / |C|`` with C the smallest enclosing box.

TensorFlow is imported by the TensorFlow functions only, so the NumPy ones (and ``metrics.detection``) stay
TensorFlow-free.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-9  # added to the TensorFlow unions: an empty box pair gives IoU 0, never NaN


# ---------------------------------------------------------------------------------------------------------------------
# NumPy

def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of boxes (float64).

    Args:
        a: (N, 4) or anything reshapeable to it, ``x0, y0, x1, y1``.
        b: (K, 4) likewise.

    Returns:
        (N, K) float64 IoU; 0 where the union is empty.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def wh_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of box shapes aligned at the origin: `iou_matrix` of the boxes ``(0, 0, w, h)``.

    Args:
        a: (N, 2) widths and heights.
        b: (K, 2) widths and heights.

    Returns:
        (N, K) float64 IoU.
    """
    return iou_matrix(_corners_np(a), _corners_np(b))


def _corners_np(wh) -> np.ndarray:
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    return np.concatenate([np.zeros_like(wh), wh], axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# TensorFlow (broadcasting over leading axes; usable inside tf.function and tf.data)

def area(boxes):
    """Area (...,) of ``x0, y0, x1, y1`` boxes (...,  4); 0 for inverted boxes."""
    import tensorflow as tf
    return tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def iou_and_union(a, b, eps: float = EPS):
    """IoU and union area of two broadcastable box tensors.

    Args:
        a: (..., 4) ``x0, y0, x1, y1`` float32.
        b: (..., 4) likewise, broadcastable against ``a``.
        eps: added to the union before dividing.

    Returns:
        ``(iou, union)``, both of the broadcast shape without the last axis.
    """
    import tensorflow as tf
    lo = tf.maximum(a[..., :2], b[..., :2])
    hi = tf.minimum(a[..., 2:], b[..., 2:])
    inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), axis=-1)
    union = area(a) + area(b) - inter
    return inter / (union + eps), union


def iou(a, b):
    """IoU of two broadcastable ``(..., 4)`` box tensors (`iou_and_union` without the union)."""
    return iou_and_union(a, b)[0]


def giou(a, b):
    """Generalized IoU (Rezatofighi et al. 2019) of two broadcastable ``(..., 4)`` box tensors, in [−1, 1]."""
    import tensorflow as tf
    value, union = iou_and_union(a, b)
    enclose = area(tf.concat([tf.minimum(a[..., :2], b[..., :2]), tf.maximum(a[..., 2:], b[..., 2:])], axis=-1))
    return value - (enclose - union) / (enclose + EPS)


def wh_iou(a, b):
    """IoU of broadcastable ``(..., 2)`` box shapes aligned at the origin (anchor matching).

    No epsilon: the shapes are positive (an exact ``inter / union``, as YOLOv3's matching).
    """
    import tensorflow as tf

    def corners(wh):
        wh = tf.cast(wh, tf.float32)
        return tf.concat([tf.zeros_like(wh), wh], axis=-1)
    return iou_and_union(corners(a), corners(b), eps=0.0)[0]
