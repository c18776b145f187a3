"""YOLOv3-style detection on any zoo backbone: head, anchors, targets, loss, decoding, NMS and prediction.

Conventions (shared with ``inputs.voc`` and ``metrics.detection``):

- Boxes are continuous pixels ``(x0, y0, x1, y1)``, x1/y1 exclusive, in **network-input pixels** (the letterboxed
  ``input_size × input_size`` image) unless a function says "original pixels" (see :mod:`models.letterbox`).
- Levels are ordered by ``STRIDES = (8, 16, 32)``; anchors ``(9, 2)`` ``(w, h)`` in input pixels sorted by area,
  anchors ``3·l … 3·l + 2`` belong to level ``l`` (0–2 stride 8, 3–5 stride 16, 6–8 stride 32).
- Model outputs (raw logits) and targets have per level the shape ``(B, S/stride, S/stride, 3, 5 + C)``, indexed
  ``[b, row (y), column (x), anchor slot]``; the last axis of an output is ``(tx, ty, tw, th, objectness, classes…)``
  with the YOLOv3 parametrisation ``cx = (σ(tx) + col)·stride``, ``cy = (σ(ty) + row)·stride``,
  ``w = anchor_w·exp(tw)``, ``h = anchor_h·exp(th)``.

The head (all layer names start with ``yolo_``; stock Keras layers only) follows YOLOv3's top-down path with widths
sized for mobile backbones: ``head_width`` w (default 128) at stride 32, w/2 at stride 16, w/4 at stride 8. Per
level: a conv set of five conv+BN+LeakyReLU(0.1) (1×1 w, 3×3 2w, 1×1 w, 3×3 2w, 1×1 w), then a 3×3 2w conv and a 1×1
output conv with bias of ``3·(5+C)`` channels, reshaped to ``(S, S, 3, 5+C)``. The route to the next finer level is a
1×1 conv (the next width) → 2× nearest upsampling → concatenation with the backbone's feature at that stride. The
objectness biases start at ``log(0.01/0.99)`` so the first steps are not swamped by the negatives.
"""
from __future__ import annotations

import math
import os

import keras as keras3
import numpy as np
import tensorflow as tf

from models.builder import build
from models.letterbox import from_input, letterbox
from models.spec import ModelSpec, SpecError, loads

STRIDES = (8, 16, 32)
DEFAULT_HEAD_WIDTH = 128
OBJECTNESS_PRIOR = 0.01
MAX_LOG_WH = 10.0  # tw/th are clipped here before exp (only matters for diverging predictions)
_COCO_ANCHORS_416 = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
_EPS = 1e-9


# ---------------------------------------------------------------------------------------------------------------------
# Anchors

def default_anchors(input_size: int) -> np.ndarray:
    """YOLOv3's COCO anchors scaled from 416 to ``input_size``: float32 (9, 2) ``(w, h)`` pixels sorted by area."""
    a = np.asarray(_COCO_ANCHORS_416, np.float32) * np.float32(input_size / 416.0)
    return a[np.argsort(a.prod(1), kind="stable")]


def _wh_iou_np(wh: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """IoU (N, K) of boxes (N, 2) and (K, 2) given as widths/heights, aligned at the origin."""
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
    return inter / (wh.prod(1)[:, None] + centres.prod(1)[None, :] - inter)


def _kmeans_once(wh: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100) -> np.ndarray:
    # k-means++ seeding with d = 1 − IoU, then Lloyd iterations (mean of each cluster's members).
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - _wh_iou_np(wh, np.asarray(centres)).max(1)
        centres.append(wh[rng.choice(len(wh), p=d * d / np.sum(d * d))])
    centres = np.asarray(centres)
    assign = None
    for _ in range(iterations):
        iou = _wh_iou_np(wh, centres)
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

    k-means++ seeding from ``np.random.default_rng(seed)``, five restarts, the one with the highest mean best-IoU
    wins: deterministic for a seed.

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
    for _ in range(5):
        centres = _kmeans_once(wh, k, rng)
        fit = float(_wh_iou_np(wh, centres).max(1).mean())
        if fit > best_fit:
            best, best_fit = centres, fit
    return best[np.argsort(best.prod(1), kind="stable")].astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Model

def _resolve(backbone, weights: str | None) -> tuple[ModelSpec, str | None]:
    """(spec, weights path) from a ModelSpec or a spec ``.json`` path, and None or an ``.npz`` path.

    ``models`` never imports ``zoo`` (DESIGN.md's dependency rule): callers resolve zoo names and weight tags
    themselves (``zoo.get_spec``, ``training.core.resolve_weights``).
    """
    if isinstance(backbone, ModelSpec):
        spec = backbone
    else:
        path = os.fspath(backbone)
        if not path.endswith(".json") or not os.path.isfile(path):
            raise SpecError("backbone", f"expected a ModelSpec or an existing spec .json path, got {path!r} "
                                        "(resolve zoo names with zoo.get_spec)")
        with open(path) as f:
            spec = loads(f.read(), path)
    if weights is not None and not (str(weights).endswith(".npz") and os.path.isfile(weights)):
        raise SpecError("weights", f"expected None or an existing .npz path, got {weights!r} "
                                   "(resolve zoo tags with zoo.weights_path)")
    return spec, weights


class _Head:
    """Head layer factories for one Keras module (Keras 3 or tf_keras) and the backbone's BN conventions."""

    def __init__(self, K, spec: ModelSpec, num_classes: int):
        self.L, self.bn, self.num_classes = K.layers, spec.bn, num_classes
        self.slope = {"negative_slope": 0.1} if K is keras3 else {"alpha": 0.1}

    def cbl(self, x, filters: int, k: int, name: str):
        x = self.L.Conv2D(filters, k, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = self.L.BatchNormalization(epsilon=self.bn.eps, momentum=self.bn.momentum, name=f"{name}_bn")(x)
        return self.L.LeakyReLU(**self.slope, name=f"{name}_act")(x)

    def conv_set(self, x, w: int, p: str):
        for i, (filters, k) in enumerate([(w, 1), (2 * w, 3), (w, 1), (2 * w, 3), (w, 1)]):
            x = self.cbl(x, filters, k, f"{p}_set{i}")
        return x

    def output(self, x, w: int, size: int, p: str):
        x = self.cbl(x, 2 * w, 3, f"{p}_out")
        x = self.L.Conv2D(3 * (5 + self.num_classes), 1, name=f"{p}_pred")(x)
        return self.L.Reshape((size, size, 3, 5 + self.num_classes), name=f"{p}_reshape")(x)

    def route(self, x, w: int, p: str):
        x = self.cbl(x, w, 1, f"{p}_route")
        return self.L.UpSampling2D(2, name=f"{p}_up")(x)


def build_detector(backbone, num_classes: int, input_size: int, *, weights: str | None = None,
                   head_width: int | None = None, keras_module=None, name: str | None = None):
    """A YOLOv3-style detector: the backbone's stride 8/16/32 features (``models.builder.build(features=True)``)
    and the head described in the module docstring.

    Args:
        backbone: a :class:`~models.spec.ModelSpec` or a spec ``.json`` path (zoo names are resolved by the caller
            with ``zoo.get_spec``: ``models`` does not import ``zoo``).
        num_classes: C.
        input_size: square input size S, a multiple of 32. Input: raw 0–255 RGB ``(S, S, 3)``.
        weights: backbone weights: None (random) or an ``.npz`` path (a zoo tag resolves with
            ``zoo.weights_path(name, tag)``). Loaded by layer name; arrays of layers the features model lacks (head
            conv, classifier) are ignored.
        head_width: w at stride 32 (default 128; w/2 and w/4 below), a multiple of 4.
        keras_module: ``keras`` (default) or ``tf_keras``.
        name: model name; default ``<backbone>_yolo``.

    Returns:
        A Functional model with outputs ``[(B, S/8, S/8, 3, 5+C), (B, S/16, …), (B, S/32, …)]`` of raw logits.

    Raises:
        SpecError: bad num_classes / input_size / head_width, or a backbone without the three feature strides.
        SpecError: a backbone that is not a spec / spec path, weights that are not an existing ``.npz``.
        models.weights.WeightsError: weights that do not fit.
    """
    if num_classes < 1:
        raise SpecError("num_classes", f"must be >= 1, got {num_classes}")
    if input_size < 32 or input_size % 32:
        raise SpecError("input_size", f"must be a positive multiple of 32 for the YOLO head, got {input_size}")
    width = DEFAULT_HEAD_WIDTH if head_width is None else head_width
    if width < 4 or width % 4:
        raise SpecError("head_width", f"must be a positive multiple of 4, got {head_width}")
    spec, path = _resolve(backbone, weights)
    K = keras3 if keras_module is None else keras_module
    features = build(spec, K, features=True, input_size=input_size, weights=path)
    c8, c16, c32 = features.outputs
    h = _Head(K, spec, num_classes)
    outputs, x, w = [], None, width
    for stride, feature in zip(reversed(STRIDES), (c32, c16, c8)):
        p = f"yolo_s{stride}"
        if x is not None:
            x = h.L.Concatenate(name=f"{p}_concat")([h.route(x, w, f"yolo_s{stride * 2}"), feature])
        else:
            x = feature
        x = h.conv_set(x, w, p)
        outputs.insert(0, h.output(x, w, input_size // stride, p))
        w //= 2
    model = K.Model(features.input, outputs, name=name or f"{spec.name}_yolo")
    prior = math.log(OBJECTNESS_PRIOR / (1.0 - OBJECTNESS_PRIOR))
    for stride in STRIDES:
        layer = model.get_layer(f"yolo_s{stride}_pred")
        bias = np.zeros(3 * (5 + num_classes), np.float32)
        bias[4::5 + num_classes] = prior
        layer.bias.assign(bias)
    return model


def set_backbone_trainable(model, trainable: bool) -> None:
    """Sets ``trainable`` on every layer whose name does not start with ``yolo_`` (BN then runs in inference mode
    when frozen, Keras' fine-tuning convention)."""
    for layer in model.layers:
        if not layer.name.startswith("yolo_"):
            layer.trainable = trainable


# ---------------------------------------------------------------------------------------------------------------------
# Targets, decoding, loss

def _anchors(anchors) -> tf.Tensor:
    return tf.reshape(tf.cast(anchors, tf.float32), (3, 3, 2))


def _wh_iou(a, b):
    inter = tf.minimum(a[..., 0], b[..., 0]) * tf.minimum(a[..., 1], b[..., 1])
    return inter / (a[..., 0] * a[..., 1] + b[..., 0] * b[..., 1] - inter)


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
    best = tf.argmax(_wh_iou(wh[:, None], tf.reshape(tf.cast(anchors, tf.float32), (1, 9, 2))), axis=1,
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


def _grid(size) -> tf.Tensor:
    """(size, size, 1, 2) cell ``(column, row)`` indices as float32."""
    r = tf.cast(tf.range(size), tf.float32)
    gx, gy = tf.meshgrid(r, r)
    return tf.stack([gx, gy], axis=-1)[:, :, None, :]


def _pred_boxes(p, anchors, stride: int):
    """Raw level output (B, g, g, 3, 5+C) → boxes (B, g, g, 3, 4) x0y0x1y1 input pixels."""
    centre = (tf.sigmoid(p[..., :2]) + _grid(tf.shape(p)[1])) * stride
    wh = anchors * tf.exp(tf.minimum(p[..., 2:4], MAX_LOG_WH))
    return tf.concat([centre - wh / 2.0, centre + wh / 2.0], axis=-1)


def _area(b):
    return tf.maximum(b[..., 2] - b[..., 0], 0.0) * tf.maximum(b[..., 3] - b[..., 1], 0.0)


def _iou_and_union(a, b):
    lo = tf.maximum(a[..., :2], b[..., :2])
    hi = tf.minimum(a[..., 2:], b[..., 2:])
    inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), axis=-1)
    union = _area(a) + _area(b) - inter
    return inter / (union + _EPS), union


def _giou(a, b):
    iou, union = _iou_and_union(a, b)
    enclose = _area(tf.concat([tf.minimum(a[..., :2], b[..., :2]), tf.maximum(a[..., 2:], b[..., 2:])], axis=-1))
    return iou - (enclose - union) / (enclose + _EPS)


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
        y_true: three (B, g, g, 3, 5+C) targets of :func:`encode_targets` (batched).
        y_pred: the model's three raw outputs.
        gt_boxes: (B, M, 4) x0y0x1y1 input pixels, all-zero rows for padding (used for the ignore mask).
        anchors: (9, 2).
        input_size: S.

    Returns:
        ``(total, parts)``: scalar float32 total and ``{"xy", "wh" | "giou", "obj", "cls"}`` scalars summing to it.
    """
    if box_loss not in ("xywh", "giou"):
        raise ValueError(f"box_loss must be 'xywh' or 'giou', got {box_loss!r}")
    anchors = _anchors(anchors)
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_valid = _area(gt_boxes) > 0.0
    keys = ("xy", "wh") if box_loss == "xywh" else ("giou",)
    parts = {k: tf.constant(0.0) for k in keys + ("obj", "cls")}
    for level, (t, p) in enumerate(zip(y_true, y_pred)):
        t, p = tf.cast(t, tf.float32), tf.cast(p, tf.float32)
        stride, anc = STRIDES[level], anchors[level]
        pos = t[..., 4]
        t_box = t[..., :4]
        t_wh = t_box[..., 2:] - t_box[..., :2]
        weight = pos * (2.0 - t_wh[..., 0] * t_wh[..., 1] / float(input_size * input_size))
        pred_box = _pred_boxes(p, anc, stride)
        if box_loss == "xywh":
            offset = (t_box[..., :2] + t_box[..., 2:]) / (2.0 * stride) - _grid(tf.shape(p)[1])
            offset = tf.where(pos[..., None] > 0, tf.clip_by_value(offset, 0.0, 1.0), 0.0)
            entropy = -(tf.math.xlogy(offset, offset) + tf.math.xlogy(1.0 - offset, 1.0 - offset))
            xy = tf.reduce_sum(_bce(offset, p[..., :2]) - entropy, axis=-1)
            t_log = tf.math.log(tf.maximum(t_wh, _EPS) / anc)
            wh = 0.5 * tf.reduce_sum(tf.square(p[..., 2:4] - t_log), axis=-1)
            parts["xy"] += tf.reduce_sum(weight * xy)
            parts["wh"] += tf.reduce_sum(weight * wh)
        else:
            parts["giou"] += tf.reduce_sum(weight * (1.0 - _giou(pred_box, t_box)))
        flat = tf.reshape(tf.stop_gradient(pred_box), (tf.shape(p)[0], -1, 1, 4))
        iou, _ = _iou_and_union(flat, gt_boxes[:, None])
        best = tf.reduce_max(tf.where(gt_valid[:, None], iou, 0.0), axis=-1)
        ignore = tf.cast(tf.reshape(best, tf.shape(pos)) > ignore_thresh, tf.float32)
        parts["obj"] += tf.reduce_sum(_bce(pos, p[..., 4]) * (pos + (1.0 - pos) * (1.0 - ignore)))
        parts["cls"] += tf.reduce_sum(tf.reduce_sum(_bce(t[..., 5:], p[..., 5:]), axis=-1) * pos)
    batch = tf.cast(tf.shape(y_pred[0])[0], tf.float32)
    parts = {k: v / batch for k, v in parts.items()}
    return tf.add_n(list(parts.values())), parts


def decode(y_pred: list, anchors, input_size: int):
    """Raw outputs → ``(boxes (B, N, 4) x0y0x1y1 input pixels clipped to [0, S], scores (B, N, C))`` with
    ``scores = σ(objectness)·σ(class)``; N = 3·Σ g², levels in ``STRIDES`` order, then row, column, slot."""
    anchors = _anchors(anchors)
    boxes, scores = [], []
    for level, p in enumerate(y_pred):
        p = tf.cast(p, tf.float32)
        batch = tf.shape(p)[0]
        boxes.append(tf.reshape(_pred_boxes(p, anchors[level], STRIDES[level]), (batch, -1, 4)))
        scores.append(tf.reshape(tf.sigmoid(p[..., 4:5]) * tf.sigmoid(p[..., 5:]), (batch, -1, p.shape[-1] - 5)))
    return tf.clip_by_value(tf.concat(boxes, 1), 0.0, float(input_size)), tf.concat(scores, 1)


def nms(boxes, scores, *, max_per_class: int = 100, max_total: int = 100, iou_threshold: float = 0.45,
        score_threshold: float = 0.01):
    """Per-class NMS over a batch (``tf.image.combined_non_max_suppression``, no clipping).

    Args:
        boxes: (B, N, 4) x0y0x1y1 (any pixel scale); scores: (B, N, C).

    Returns:
        ``(boxes (B, K, 4) x0y0x1y1 same scale, scores (B, K), classes (B, K) int32, valid (B,) int32)`` with
        K = ``max_total``; rows ``>= valid[b]`` are padding.
    """
    yx = tf.gather(tf.cast(boxes, tf.float32), [1, 0, 3, 2], axis=-1)[:, :, None, :]
    b, s, c, v = tf.image.combined_non_max_suppression(
        yx, tf.cast(scores, tf.float32), max_output_size_per_class=max_per_class, max_total_size=max_total,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return tf.gather(b, [1, 0, 3, 2], axis=-1), s, tf.cast(c, tf.int32), tf.cast(v, tf.int32)


def predict(model, images: list, anchors, input_size: int, *, batch_size: int = 16, **nms_kwargs) -> list:
    """Detections for images of any sizes: letterbox → ``model(x, training=False)`` → decode → NMS → original pixels.

    Args:
        model: the detector (or any callable with the same outputs).
        images: uint8 (H, W, 3) arrays of any sizes.
        anchors: (9, 2) input pixels; input_size: the model's S.
        batch_size: images per model call.
        **nms_kwargs: passed to :func:`nms`.

    Returns:
        Per image ``(boxes (k, 4) float32 x0y0x1y1 ORIGINAL pixels clipped to the image, scores (k,) float32,
        classes (k,) int32)``, best first; boxes that clip to nothing are dropped.
    """
    results = []
    for start in range(0, len(images), batch_size):
        chunk = [np.asarray(im) for im in images[start:start + batch_size]]
        for i, im in enumerate(chunk):
            if im.ndim != 3 or im.shape[-1] != 3:
                raise ValueError(f"predict: image {start + i} must be (H, W, 3), got shape {im.shape}")
        boxed = [letterbox(im, input_size) for im in chunk]
        outputs = model(tf.stack([b[0] for b in boxed]), training=False)
        b, s, c, v = nms(*decode(list(outputs), anchors, input_size), **nms_kwargs)
        for i, im in enumerate(chunk):
            n = int(v[i])
            box = from_input(b[i, :n], boxed[i][1], im.shape[0], im.shape[1]).numpy().astype(np.float32)
            keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
            results.append((box[keep], s[i, :n].numpy().astype(np.float32)[keep],
                            c[i, :n].numpy().astype(np.int32)[keep]))
    return results
