"""YOLOv3 target assignment (the label encoder): ground-truth boxes of one image → the three per-level target
tensors, and the ``tf.data`` map that adds them to detection batches.

A box goes to the anchor whose shape fits it best (IoU of ``(w, h)`` aligned at the origin, YOLOv3 §2.1), at that
anchor's level, in the cell holding its centre. Pure TensorFlow ops: usable in ``tf.data.Dataset.map``.
"""
from __future__ import annotations

import tensorflow as tf

from detection.iou import wh_iou
from models.yolo import STRIDES


def encode_targets(boxes, labels, anchors, input_size: int, num_classes: int) -> tuple:
    """YOLOv3 targets of ONE image (pure TF ops: usable in ``tf.data.Dataset.map``).

    Each box goes to the best of the 9 anchors by IoU of ``(w, h)`` aligned at the origin: that anchor's level
    (``best // 3``) and slot (``best % 3``), in the cell ``floor(centre / stride)`` (clipped to the grid). Two boxes
    that land in the same cell and slot: one of them is kept.

    Args:
        boxes: (M, 4) ``x0, y0, x1, y1`` network-input pixels.
        labels: (M,) int class ids; rows with label −1 (padding) or an empty box are ignored.
        anchors: (9, 2) ``(w, h)`` input pixels.
        input_size: S (a multiple of 32).
        num_classes: C.

    Returns:
        Three float32 tensors ``(S/8, S/8, 3, 5+C)``, ``(S/16, …)``, ``(S/32, …)``; at a positive slot the last axis
        is ``(x0, y0, x1, y1 in input pixels, 1, one-hot class)``, everywhere else zeros.
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), (-1, 4))
    labels = tf.reshape(tf.cast(labels, tf.int32), (-1,))
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (labels >= 0) & (wh[:, 0] > 0) & (wh[:, 1] > 0)
    boxes, labels, wh = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep), tf.boolean_mask(wh, keep)
    best = tf.argmax(wh_iou(wh[:, None], tf.reshape(tf.cast(anchors, tf.float32), (1, 9, 2))), axis=1,
                     output_type=tf.int32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    rows = tf.concat([boxes, tf.ones_like(boxes[:, :1]), tf.one_hot(labels, num_classes)], axis=1)
    out = []
    for level, stride in enumerate(STRIDES):
        size = input_size // stride
        sel = tf.equal(best // 3, level)
        cell = tf.clip_by_value(tf.cast(tf.floor(tf.boolean_mask(centre, sel) / stride), tf.int32), 0, size - 1)
        index = tf.stack([cell[:, 1], cell[:, 0], tf.boolean_mask(best, sel) % 3], axis=1)
        out.append(tf.tensor_scatter_nd_update(tf.zeros((size, size, 3, 5 + num_classes)), index,
                                               tf.boolean_mask(rows, sel)))
    return tuple(out)


def with_targets(ds, anchors, input_size: int, num_classes: int):
    """Adds the three YOLO target tensors to batches.

    Args:
        ds: a dataset of ``(images, boxes, labels)`` batches (``inputs.voc.detection_dataset``).
        anchors: (9, 2) input pixels.
        input_size: S.
        num_classes: C.

    Returns:
        The dataset of ``(images, boxes, t8, t16, t32)`` batches.
    """
    specs = tuple(tf.TensorSpec((input_size // s, input_size // s, 3, 5 + num_classes), tf.float32) for s in STRIDES)

    def add(images, boxes, labels):
        t = tf.map_fn(lambda bl: encode_targets(bl[0], bl[1], anchors, input_size, num_classes),
                      (boxes, labels), fn_output_signature=specs)
        return (images, boxes, *t)
    return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE)
