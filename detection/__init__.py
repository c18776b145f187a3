"""YOLOv3-style detection on any zoo backbone, split by concern (as keras-cv's YOLOv8): IoU (`detection.iou`),
anchors (`detection.anchors`), target assignment (`detection.targets`), loss (`detection.loss`), decoding and NMS
(`detection.decode`), prediction and evaluation (`detection.predict`), the training step (`detection.trainer`),
LiteRT export (`detection.tflite`), the prediction figure (`detection.figures`) and the fine-tuning run
(`detection.finetune`). The Keras head itself is `models.yolo` (it builds on the builder's feature endpoints).

Conventions (shared with ``models.yolo``, ``inputs.voc`` and ``metrics.detection``):

- Boxes are continuous pixels ``(x0, y0, x1, y1)``, x1/y1 exclusive, in **network-input pixels** (the letterboxed
  ``input_size × input_size`` image) unless a function says "original pixels" (see :mod:`models.letterbox`).
- Levels are ordered by ``models.yolo.STRIDES = (8, 16, 32)``; anchors ``(9, 2)`` ``(w, h)`` in input pixels sorted
  by area, anchors ``3·l … 3·l + 2`` belong to level ``l`` (0–2 stride 8, 3–5 stride 16, 6–8 stride 32).
- Model outputs (raw logits) and targets have per level the shape ``(B, S/stride, S/stride, 3, 5 + C)``, indexed
  ``[b, row (y), column (x), anchor slot]``; the last axis of an output is ``(tx, ty, tw, th, objectness, classes…)``
  with the YOLOv3 parametrisation ``cx = (σ(tx) + col)·stride``, ``cy = (σ(ty) + row)·stride``,
  ``w = anchor_w·exp(tw)``, ``h = anchor_h·exp(th)``.

Importing the package, `detection.iou`, `detection.anchors` or `detection.finetune` does not import TensorFlow.
"""
