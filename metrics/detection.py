"""Detection metrics: PASCAL VOC mean average precision (devkit rules) and COCO AP through pycocotools.

Inputs, per image in the same order for both:

- detections: ``(boxes (K, 4), scores (K,), classes (K,))``;
- ground truths: ``(boxes (N, 4), labels (N,), difficult (N,) bool)``;

boxes ``x0, y0, x1, y1`` in the same pixel frame for both (original image pixels, normally), classes/labels in
``0 .. num_classes − 1``. IoU (`detection.iou.iou_matrix`) is computed on continuous coordinates (area =
(x1 − x0)(y1 − y0), no VOC "+1").
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from detection.iou import iou_matrix


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from cumulative recall/precision arrays (detections sorted by score), as the VOC devkit.

    use_07_metric=True: VOC2007 11-point interpolation, mean over t ∈ {0, 0.1, …, 1} of the maximum precision at
    recall ≥ t (0 where no recall reaches t). False (VOC2010+): area under the precision envelope (precision made
    monotonically non-increasing from the right) with sentinels recall 0 → precision 0 and recall 1 → precision 0.
    """
    rec = np.asarray(recall, np.float64)
    prec = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the devkit's thresholds, float rounding included (0.30000000000000004…)
            reached = rec >= t
            ap += (np.max(prec[reached]) if reached.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def evaluate_voc(detections: list, ground_truths: list, num_classes: int, iou_threshold: float = 0.5) -> dict:
    """PASCAL VOC detection AP per class and their mean, with the devkit's matching (``VOCevaldet``).

    Per class, all detections of all images in decreasing score (ties: image order, then detection order); each is
    compared with every ground truth of its class in its image and takes the one of highest IoU. If that IoU ≥
    ``iou_threshold``: a difficult ground truth → ignored (neither TP nor FP); an unmatched one → TP (now matched);
    an already matched one → FP (a duplicate — even if another unmatched ground truth also overlaps, as in the
    devkit). Below the threshold → FP. Recall divides by the number of non-difficult ground truths.

    Returns:
        ``{"map_voc07", "map_auc", "ap_voc07": [per class], "ap_auc": [per class], "num_gt": [non-difficult count per
        class]}``. A class without non-difficult ground truth has AP NaN and is left out of the means (NaN when no
        class has any).
    """
    _check_lengths(detections, ground_truths)
    ap07, auc, num_gt = [], [], []
    for c in range(num_classes):
        gts = []  # per image: (boxes, difficult, matched)
        for boxes, labels, difficult in ground_truths:
            mine = np.asarray(labels).reshape(-1) == c
            gts.append((np.asarray(boxes, np.float64).reshape(-1, 4)[mine],
                        np.asarray(difficult, bool).reshape(-1)[mine], np.zeros(int(mine.sum()), bool)))
        npos = int(sum((~d).sum() for _, d, _ in gts))
        num_gt.append(npos)
        image_ids, scores, boxes = [], [], []
        for i, (b, s, k) in enumerate(detections):
            mine = np.asarray(k).reshape(-1) == c
            image_ids.append(np.full(int(mine.sum()), i))
            scores.append(np.asarray(s, np.float64).reshape(-1)[mine])
            boxes.append(np.asarray(b, np.float64).reshape(-1, 4)[mine])
        image_ids, scores, boxes = np.concatenate(image_ids), np.concatenate(scores), np.concatenate(boxes)
        order = np.argsort(-scores, kind="stable")
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for rank, d in enumerate(order):
            gt_boxes, gt_difficult, matched = gts[image_ids[d]]
            if not len(gt_boxes):
                fp[rank] = 1
                continue
            overlaps = iou_matrix(boxes[d], gt_boxes)[0]
            j = int(np.argmax(overlaps))
            if overlaps[j] < iou_threshold:
                fp[rank] = 1
            elif not gt_difficult[j]:
                if matched[j]:
                    fp[rank] = 1
                else:
                    tp[rank], matched[j] = 1, True
        if npos == 0:
            ap07.append(float("nan"))
            auc.append(float("nan"))
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap07.append(voc_ap(recall, precision, True))
        auc.append(voc_ap(recall, precision, False))
    return {"map_voc07": _nanmean(ap07), "map_auc": _nanmean(auc), "ap_voc07": ap07, "ap_auc": auc, "num_gt": num_gt}


def evaluate_coco(detections: list, ground_truths: list, num_classes: int) -> dict:
    """COCO box AP (IoU 0.5:0.95), AP50 and AP75 through pycocotools (``COCOeval`` summary stats 0, 1, 2).

    The ground truth is built in memory: one COCO image per entry, category ``c + 1`` for class ``c``, bbox
    ``[x0, y0, w, h]``, area w·h (so COCO's small/medium/large split uses box area). Difficult boxes become
    ``iscrowd=1``: as in VOC they count neither as positives nor, when matched, as false positives (COCO measures a
    crowd overlap as intersection over the detection's area). COCO keeps the 100 best detections per image.
    With no detections at all every AP is 0.0 (``loadRes`` refuses an empty list); a value COCO cannot define (no
    ground truth) is NaN.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    _check_lengths(detections, ground_truths)
    images, annotations = [], []
    for i, (boxes, labels, difficult) in enumerate(ground_truths):
        images.append({"id": i + 1})
        for box, label, hard in zip(np.asarray(boxes, float).reshape(-1, 4), np.asarray(labels).reshape(-1),
                                    np.asarray(difficult, bool).reshape(-1)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": int(hard)})
    results = []
    for i, (boxes, scores, classes) in enumerate(detections):
        for box, score, cls in zip(np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores).reshape(-1),
                                   np.asarray(classes).reshape(-1)):
            results.append({"image_id": i + 1, "category_id": int(cls) + 1, "score": float(score),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"info": {}, "images": images, "annotations": annotations,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) if s >= 0 else float("nan") for s in evaluator.stats[:3]]
    return {"ap": stats[0], "ap50": stats[1], "ap75": stats[2]}


def _check_lengths(detections: list, ground_truths: list) -> None:
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection entries for {len(ground_truths)} images")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")
