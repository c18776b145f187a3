"""Detections for images of any size (letterbox → model → decode → NMS → original pixels) and their VOC/COCO mAP
against the records' ground truth."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from detection.decode import decode, nms
from models.letterbox import from_input, letterbox


def predict(model, images: list, anchors, input_size: int, *, batch_size: int = 16, **nms_kwargs) -> list:
    """Detections for images of any sizes: letterbox → ``model(x, training=False)`` → decode → NMS → original pixels.

    Args:
        model: the detector (or any callable with the same outputs).
        images: uint8 (H, W, 3) arrays of any sizes.
        anchors: (9, 2) input pixels.
        input_size: the model's S.
        batch_size: images per model call.
        **nms_kwargs: passed to `detection.decode.nms`.

    Returns:
        Per image ``(boxes (k, 4) float32 x0y0x1y1 ORIGINAL pixels clipped to the image, scores (k,) float32,
        classes (k,) int32)``, best first; boxes that clip to nothing are dropped.

    Raises:
        ValueError: an image that is not (H, W, 3).
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


class Forward:
    """The detector's inference call compiled once per batch shape (`predict` calls it like the model)."""

    def __init__(self, model):
        self._fn = tf.function(lambda x: model(x, training=False))

    def __call__(self, x, training=False):
        return self._fn(x)


def load_images(records) -> list:
    """uint8 (H, W, 3) arrays of ``inputs.voc.Record`` s (decoded from file or taken as they are)."""
    from PIL import Image
    out = []
    for r in records:
        if isinstance(r.image, str):
            with Image.open(r.image) as im:
                out.append(np.asarray(im.convert("RGB")))
        else:
            out.append(np.asarray(r.image, np.uint8))
    return out


def evaluate(model, images, records, anchors, input_size: int, num_classes: int, coco: bool = False,
             per_class: bool = False):
    """`predict` on the images, scored against their records in original pixels.

    Args:
        model: the detector, a `Forward` or a ``detection.tflite.TFLiteDetector``.
        images: the records' uint8 images (`load_images`).
        records: ``inputs.voc.Record`` s (boxes, labels, difficult).
        anchors: (9, 2) input pixels.
        input_size: S.
        num_classes: C.
        coco: add COCO AP (pycocotools) to the VOC metrics.
        per_class: add the per-class VOC AP at IoU 0.5 as lists in class order, ``"ap50_voc07_per_class"`` and
            ``"ap50_auc_per_class"`` (NaN for a class without non-difficult ground truth in these records).

    Returns:
        ``(detections, metrics)``: per image ``(boxes, scores, classes)``, and ``{"map50_voc07", "map50_auc"}`` (plus
        ``"coco_ap", "coco_ap50", "coco_ap75"`` with ``coco``, the per-class lists with ``per_class``).
    """
    from metrics.detection import evaluate_coco, evaluate_voc
    dets = predict(model, images, anchors, input_size)
    gts = [(r.boxes, r.labels, r.difficult) for r in records]
    voc = evaluate_voc(dets, gts, num_classes)
    metrics = {"map50_voc07": voc["map_voc07"], "map50_auc": voc["map_auc"]}
    if per_class:
        metrics.update(ap50_voc07_per_class=list(voc["ap_voc07"]), ap50_auc_per_class=list(voc["ap_auc"]))
    if coco:
        metrics.update({f"coco_{k}": v for k, v in evaluate_coco(dets, gts, num_classes).items()})
    return dets, metrics
