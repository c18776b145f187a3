"""The YOLOv3 loss (Redmon & Farhadi 2018, §2.1–2.3): box regression (YOLOv3's xywh form, or 1 − GIoU), objectness
with YOLOv3's ignore mask, and per-class binary cross-entropy."""
from __future__ import annotations

import tensorflow as tf

from detection.decode import grid, level_anchors, pred_boxes
from detection.iou import area, giou, iou
from models.yolo import STRIDES

BOX_LOSSES = ("xywh", "giou")
_EPS = 1e-9  # floor of the target sizes before the log


def _bce(labels, logits):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def yolo_loss(y_true: list, y_pred: list, gt_boxes, anchors, input_size: int, *, ignore_thresh: float = 0.5,
              box_loss: str = "xywh"):
    """The YOLOv3 loss, summed over positions and levels, averaged over the batch.

    Per positive slot (target objectness 1), with weight ``2 − w·h/S²`` (small boxes count more):

    - ``box_loss="xywh"`` (default, YOLOv3's form): ``"xy"`` = BCE of ``σ(tx, ty)`` against the in-cell centre offset
      ``centre/stride − cell`` in [0, 1], reported minus the targets' own entropy (same gradients, 0 at a perfect
      fit); ``"wh"`` = ``½·(tw − log(w/anchor_w))² + ½·(th − log(h/anchor_h))²``.
    - ``box_loss="giou"``: ``"giou"`` = ``1 − GIoU(predicted box, target box)``.
    - ``"cls"`` = BCE of every class logit against the one-hot class.

    ``"obj"`` = BCE of the objectness logit against 1 on positives and 0 on negatives, except negatives whose
    predicted box has IoU > ``ignore_thresh`` with any ground-truth box of its image (ignored).

    Args:
        y_true: three (B, g, g, 3, 5+C) targets of `detection.targets.encode_targets` (batched).
        y_pred: the model's three raw outputs.
        gt_boxes: (B, M, 4) x0y0x1y1 input pixels, all-zero rows for padding (used for the ignore mask).
        anchors: (9, 2).
        input_size: S.
        ignore_thresh: IoU above which a negative's objectness is not penalised.
        box_loss: ``"xywh"`` or ``"giou"``.

    Returns:
        ``(total, parts)``: scalar float32 total and ``{"xy", "wh" | "giou", "obj", "cls"}`` scalars summing to it.

    Raises:
        ValueError: an unknown ``box_loss``.
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be 'xywh' or 'giou', got {box_loss!r}")
    anchors = level_anchors(anchors)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_valid = area(gt_boxes) > 0.0
    keys = ("xy", "wh") if box_loss == "xywh" else ("giou",)
    parts = {k: tf.constant(0.0) for k in keys + ("obj", "cls")}
    for level, (t, p) in enumerate(zip(y_true, y_pred)):
        t, p = tf.cast(t, tf.float32), tf.cast(p, tf.float32)
        stride, anc = STRIDES[level], anchors[level]
        pos = t[..., 4]
        t_box = t[..., :4]
        t_wh = t_box[..., 2:] - t_box[..., :2]
        weight = pos * (2.0 - t_wh[..., 0] * t_wh[..., 1] / float(input_size * input_size))
        pred_box = pred_boxes(p, anc, stride)
        if box_loss == "xywh":
            offset = (t_box[..., :2] + t_box[..., 2:]) / (2.0 * stride) - grid(tf.shape(p)[1])
            offset = tf.where(pos[..., None] > 0, tf.clip_by_value(offset, 0.0, 1.0), 0.0)
            entropy = -(tf.math.xlogy(offset, offset) + tf.math.xlogy(1.0 - offset, 1.0 - offset))
            xy = tf.reduce_sum(_bce(offset, p[..., :2]) - entropy, axis=-1)
            t_log = tf.math.log(tf.maximum(t_wh, _EPS) / anc)
            wh = 0.5 * tf.reduce_sum(tf.square(p[..., 2:4] - t_log), axis=-1)
            parts["xy"] += tf.reduce_sum(weight * xy)
            parts["wh"] += tf.reduce_sum(weight * wh)
        else:
            parts["giou"] += tf.reduce_sum(weight * (1.0 - giou(pred_box, t_box)))
        # Ignore mask: each prediction's best IoU with any (non-padding) ground-truth box of its image.
        flat = tf.reshape(tf.stop_gradient(pred_box), (tf.shape(p)[0], -1, 1, 4))
        best = tf.reduce_max(tf.where(gt_valid[:, None], iou(flat, gt_boxes[:, None]), 0.0), axis=-1)
        ignore = tf.cast(tf.reshape(best, tf.shape(pos)) > ignore_thresh, tf.float32)
        parts["obj"] += tf.reduce_sum(_bce(pos, p[..., 4]) * (pos + (1.0 - pos) * (1.0 - ignore)))
        parts["cls"] += tf.reduce_sum(tf.reduce_sum(_bce(t[..., 5:], p[..., 5:]), axis=-1) * pos)
    batch = tf.cast(tf.shape(y_pred[0])[0], tf.float32)
    parts = {k: v / batch for k, v in parts.items()}
    return tf.add_n(list(parts.values())), parts
