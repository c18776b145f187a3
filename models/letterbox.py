"""Letterbox resizing for detection: keep the aspect ratio, scale the longer side to ``size``, pad the rest.

One place for the transform shared by the detection data pipeline (``inputs.voc``) and
``detection.predict.predict``, so boxes map into the network input and back the same way.

Coordinates are continuous pixels ``(x0, y0, x1, y1)`` with x1/y1 exclusive (a box covering pixel columns 0..9 is
``x0 = 0, x1 = 10``). ``params = (scale, pad_x, pad_y)``: ``x_input = x · scale + pad_x``.
"""
from __future__ import annotations

import tensorflow as tf

FILL = 114.0  # grey padding, as in the YOLO family


def letterbox_params(height, width, size: int):
    """``(scale, pad_x, pad_y)`` as a float32 tensor (3,) for an image of ``height × width`` into ``size × size``."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    scale = tf.minimum(size / w, size / h)
    new_w = tf.round(w * scale)
    new_h = tf.round(h * scale)
    pad_x = tf.floor((size - new_w) / 2.0)
    pad_y = tf.floor((size - new_h) / 2.0)
    return tf.stack([scale, pad_x, pad_y])


def letterbox(image, size: int, fill: float = FILL):
    """Resizes an (H, W, C) image into (size, size, C) float32 keeping its aspect ratio; returns (image, params)."""
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    params = letterbox_params(shape[0], shape[1], size)
    new_h = tf.cast(tf.round(tf.cast(shape[0], tf.float32) * params[0]), tf.int32)
    new_w = tf.cast(tf.round(tf.cast(shape[1], tf.float32) * params[0]), tf.int32)
    new_h = tf.clip_by_value(new_h, 1, size)
    new_w = tf.clip_by_value(new_w, 1, size)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]), method="bilinear")
    pad_y = tf.cast(params[2], tf.int32)
    pad_x = tf.cast(params[1], tf.int32)
    padded = tf.pad(resized - fill, [[pad_y, size - new_h - pad_y], [pad_x, size - new_w - pad_x], [0, 0]]) + fill
    return tf.ensure_shape(padded, (size, size, image.shape[-1])), params


def to_input(boxes, params):
    """Boxes (..., 4) in original image pixels → network-input pixels."""
    boxes = tf.cast(boxes, tf.float32)
    offset = tf.stack([params[1], params[2], params[1], params[2]])
    return boxes * params[0] + offset


def from_input(boxes, params, height=None, width=None):
    """Boxes (..., 4) in network-input pixels → original image pixels, clipped to the image when its size is given."""
    boxes = tf.cast(boxes, tf.float32)
    offset = tf.stack([params[1], params[2], params[1], params[2]])
    out = (boxes - offset) / params[0]
    if height is not None and width is not None:
        hi = tf.cast(tf.stack([width, height, width, height]), tf.float32)
        out = tf.clip_by_value(out, 0.0, hi)
    return out
