"""Decoding the head's raw outputs into boxes and scores (the YOLOv3 parametrisation of the package docstring), and
per-class non-maximum suppression (``tf.image.combined_non_max_suppression``)."""
from __future__ import annotations

import tensorflow as tf

from models.yolo import STRIDES

MAX_LOG_WH = 10.0  # tw/th are clipped here before exp (only matters for diverging predictions)


def level_anchors(anchors) -> tf.Tensor:
    """(9, 2) anchors → (3 levels, 3 slots, 2) float32."""
    return tf.reshape(tf.cast(anchors, tf.float32), (3, 3, 2))


def grid(size) -> tf.Tensor:
    """(size, size, 1, 2) cell ``(column, row)`` indices as float32."""
    r = tf.cast(tf.range(size), tf.float32)
    gx, gy = tf.meshgrid(r, r)
    return tf.stack([gx, gy], axis=-1)[:, :, None, :]


def pred_boxes(p, anchors, stride: int):
    """One level's boxes.

    Args:
        p: raw level output (B, g, g, 3, 5+C).
        anchors: that level's (3, 2) anchors.
        stride: that level's stride.

    Returns:
        (B, g, g, 3, 4) ``x0, y0, x1, y1`` input pixels (not clipped).
    """
    centre = (tf.sigmoid(p[..., :2]) + grid(tf.shape(p)[1])) * stride
    wh = anchors * tf.exp(tf.minimum(p[..., 2:4], MAX_LOG_WH))
    return tf.concat([centre - wh / 2.0, centre + wh / 2.0], axis=-1)


def decode(y_pred: list, anchors, input_size: int):
    """Raw outputs → boxes and per-class scores.

    Args:
        y_pred: the model's three raw outputs.
        anchors: (9, 2) input pixels.
        input_size: S.

    Returns:
        ``(boxes (B, N, 4) x0y0x1y1 input pixels clipped to [0, S], scores (B, N, C))`` with
        ``scores = σ(objectness)·σ(class)``; N = 3·Σ g², levels in ``STRIDES`` order, then row, column, slot.
    """
    anchors = level_anchors(anchors)
    boxes, scores = [], []
    for level, p in enumerate(y_pred):
        p = tf.cast(p, tf.float32)
        batch = tf.shape(p)[0]
        boxes.append(tf.reshape(pred_boxes(p, anchors[level], STRIDES[level]), (batch, -1, 4)))
        scores.append(tf.reshape(tf.sigmoid(p[..., 4:5]) * tf.sigmoid(p[..., 5:]), (batch, -1, p.shape[-1] - 5)))
    return tf.clip_by_value(tf.concat(boxes, 1), 0.0, float(input_size)), tf.concat(scores, 1)


def nms(boxes, scores, *, max_per_class: int = 100, max_total: int = 100, iou_threshold: float = 0.45,
        score_threshold: float = 0.01):
    """Per-class NMS over a batch (``tf.image.combined_non_max_suppression``, no clipping).

    Args:
        boxes: (B, N, 4) x0y0x1y1 (any pixel scale).
        scores: (B, N, C).
        max_per_class: boxes kept per class and image.
        max_total: boxes kept per image (K).
        iou_threshold: boxes overlapping a better one of their class by more are suppressed.
        score_threshold: boxes scoring below are dropped.

    Returns:
        ``(boxes (B, K, 4) x0y0x1y1 same scale, scores (B, K), classes (B, K) int32, valid (B,) int32)`` with
        K = ``max_total``; rows ``>= valid[b]`` are padding.
    """
    yx = tf.gather(tf.cast(boxes, tf.float32), [1, 0, 3, 2], axis=-1)[:, :, None, :]
    b, s, c, v = tf.image.combined_non_max_suppression(
        yx, tf.cast(scores, tf.float32), max_output_size_per_class=max_per_class, max_total_size=max_total,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return tf.gather(b, [1, 0, 3, 2], axis=-1), s, tf.cast(c, tf.int32), tf.cast(v, tf.int32)
