"""Detection data (inputs.voc: VOC reader, tf.data pipeline), anchors from records (detection.anchors) and metrics
(metrics.detection: VOC AP, COCO AP)."""
import logging
import math
import os
import re

import numpy as np
import pytest

from common.errors import InputError
from inputs.voc import check_split, detection_dataset, load_records, validate_detection
from metrics.detection import evaluate_coco, evaluate_voc, voc_ap

# ---------------------------------------------------------------------------------------------------------------
# A three-image VOC fixture: (id, file name, width, height, objects (name, xmin, ymin, xmax, ymax, difficult|None))
FIXTURE = [
    ("a", "a.jpg", 40, 30, [("dog", 5, 6, 20, 25, 0), ("cat", 21, 1, 40, 30, 1)]),
    ("b", "b.jpg", 32, 24, [("cat", 1, 1, 10, 10, None)]),  # no <difficult> tag: 0
    ("c", "c.png", 24, 32, [("bird", 3, 4, 20, 30, 0)]),
]


def _xml(filename, width, height, objects):
    parts = [f"<annotation><filename>{filename}</filename>"
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, x0, y0, x1, y1, difficult in objects:
        tag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        parts.append(f"<object><name>{name}</name>{tag}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def _write_voc(root, fixture=FIXTURE, split="train"):
    import tensorflow as tf
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        os.makedirs(root / sub, exist_ok=True)
    for image_id, filename, w, h, objects in fixture:
        pixels = tf.fill([h, w, 3], tf.constant(90, tf.uint8))
        data = tf.io.encode_png(pixels) if filename.endswith(".png") else tf.io.encode_jpeg(pixels)
        (root / "JPEGImages" / filename).write_bytes(data.numpy())
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(filename, w, h, objects))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{f[0]}\n" for f in fixture))
    return f"voc:{root}"


def test_voc_reader(tmp_path):
    records, names = load_records(_write_voc(tmp_path), "train")
    assert names == ["bird", "cat", "dog"]  # sorted from the annotations
    assert [r.id for r in records] == ["a", "b", "c"]
    a, b, c = records
    assert (a.width, a.height, c.width, c.height) == (40, 30, 24, 32)
    assert a.image == str(tmp_path / "JPEGImages" / "a.jpg") and c.image.endswith("c.png")
    # 1-based inclusive xmin..xmax → 0-based x0 = xmin − 1, exclusive x1 = xmax
    np.testing.assert_array_equal(a.boxes, [[4, 5, 20, 25], [20, 0, 40, 30]])
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int32 and a.difficult.dtype == bool
    np.testing.assert_array_equal(a.labels, [2, 1])
    np.testing.assert_array_equal(a.difficult, [False, True])
    np.testing.assert_array_equal(b.difficult, [False])
    np.testing.assert_array_equal(c.labels, [0])
    # Given class names set the ids; a split list that is not there is named.
    records, names = load_records(f"voc:{tmp_path}", "train", class_names=["dog", "cat", "bird", "horse"])
    np.testing.assert_array_equal(records[0].labels, [0, 1])
    with pytest.raises(InputError, match=r"ImageSets/Main/val\.txt.*have train"):
        load_records(f"voc:{tmp_path}", "val")


BAD = {  # case → (fixture change for image "b", text the message must hold besides the file name)
    "malformed": (None, "malformed XML"),
    "outside": ([("cat", 1, 1, 40, 10, 0)], "outside the 32x24 image"),
    "empty": ([("cat", 8, 1, 6, 10, 0)], "empty box"),
    "inverted by a fraction": ([("cat", 8, 1, 7.5, 10, 0)], "empty box"),  # x1 - x0 = 0.5 after the − 1 shift
    "zero width": ([("cat", 5, 1, 5, 10, 0)], "object 0: zero-size box xmin=5 ymin=1 xmax=5 ymax=10"),
    "zero height": ([("cat", 1, 7, 10, 7, 0)], "object 0: zero-size box xmin=1 ymin=7 xmax=10 ymax=7"),
    "unknown class": ([("cow", 1, 1, 10, 10, 0)], "unknown class 'cow'"),
}


@pytest.mark.parametrize("case", BAD)
def test_voc_errors_name_the_file(tmp_path, case):
    objects, text = BAD[case]
    fixture = [f if f[0] != "b" else (*f[:4], objects or []) for f in FIXTURE]
    dataset = _write_voc(tmp_path, fixture)
    xml = tmp_path / "Annotations" / "b.xml"
    if objects is None:
        xml.write_text("<annotation><size><width>32</width></annotation>")
    class_names = ["bird", "cat", "dog"]  # given: 'cow' is unknown
    with pytest.raises(InputError) as info:
        load_records(dataset, "train", class_names=class_names)
    assert str(xml) in str(info.value) and text in str(info.value)
    records, _ = load_records(dataset, "train", class_names=class_names, on_error="skip")
    if objects is None:  # the unparsable file goes
        assert [r.id for r in records] == ["a", "c"]
    else:  # only its bad object goes
        assert [r.id for r in records] == ["a", "b", "c"] and len(records[1].labels) == 0


def test_voc_with_every_annotation_unreadable_names_the_first(tmp_path):
    """No class names can be read because no annotation parses: the error says so and names a file, instead of
    only "no object names"."""
    dataset = _write_voc(tmp_path)
    for xml in sorted((tmp_path / "Annotations").iterdir()):
        xml.write_text("<annotation><size><width>32</width></annotation>")  # not well-formed
    with pytest.raises(InputError, match=r"no object names.*annotation file\(s\) unreadable, the first: .*a\.xml"):
        load_records(dataset, "train")


def test_voc_skip_logs_one_warning_with_counts(tmp_path, caplog):
    fixture = [FIXTURE[0], (*FIXTURE[1][:4], [("cat", 1, 1, 99, 10, 0), ("cat", 1, 1, 10, 10, 0)]), FIXTURE[2]]
    dataset = _write_voc(tmp_path, fixture)
    (tmp_path / "JPEGImages" / "c.png").unlink()  # a missing image drops its file
    with pytest.raises(InputError, match=r"b\.xml: object 0: box .* outside"):
        load_records(dataset, "train")
    with caplog.at_level(logging.WARNING):
        records, _ = load_records(dataset, "train", on_error="skip")
    assert [r.id for r in records] == ["a", "b"] and len(records[1].labels) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 1 file(s) and 1 object(s)" in warnings[0]


def test_voc_zero_size_boxes_follow_on_error(tmp_path, caplog):
    """xmin == xmax (or ymin == ymax) used to become a one-pixel box; it is a bad annotation: with raise, one line
    naming the file and object; with skip, those objects go (the good ones stay) and one warning counts them."""
    fixture = [(*FIXTURE[0][:4], [("dog", 5, 6, 20, 25, 0), ("cat", 21, 1, 21, 30, 0)]),  # object 1: zero width
               (*FIXTURE[1][:4], [("cat", 3, 9, 10, 9, 0)]),  # zero height: the file keeps no object
               FIXTURE[2]]
    dataset = _write_voc(tmp_path, fixture)
    with pytest.raises(InputError) as info:
        load_records(dataset, "train")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "Annotations" / "a.xml") + ": object 1: ")
    assert "zero-size box xmin=21 ymin=1 xmax=21 ymax=30" in message
    with caplog.at_level(logging.WARNING):
        records, names = load_records(dataset, "train", on_error="skip")
    assert [r.id for r in records] == ["a", "b", "c"] and [len(r.labels) for r in records] == [1, 0, 1]
    np.testing.assert_array_equal(records[0].boxes, [[4, 5, 20, 25]])  # the good box of a.xml is kept
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 0 file(s) and 2 object(s)" in warnings[0]
    assert "a.xml: object 1: zero-size box" in warnings[0]


def test_voc_image_must_exist_and_match_its_size(tmp_path):
    dataset = _write_voc(tmp_path)
    xml = tmp_path / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<width>40</width>", "<width>41</width>"))
    with pytest.raises(InputError, match=r"a\.xml: <size> 41x30 disagrees with .*a\.jpg \(40x30\)"):
        load_records(dataset, "train")
    (tmp_path / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(InputError, match=r"a\.xml: no image a\.jpg in .*JPEGImages"):
        load_records(dataset, "train")


def test_validate_detection(tmp_path):
    validate_detection("shapes")
    validate_detection("voc/2007")
    validate_detection(_write_voc(tmp_path / "voc"))
    with pytest.raises(InputError, match="is not a directory"):
        validate_detection(f"voc:{tmp_path / 'missing'}")
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        os.makedirs(tmp_path / "partial" / sub)
    os.rmdir(tmp_path / "partial" / "Annotations")
    with pytest.raises(InputError, match=r"no .*partial/Annotations/"):
        validate_detection(f"voc:{tmp_path / 'partial'}")
    for bad in ("voc:", "folder:x", "Not a name!"):
        with pytest.raises(InputError):
            validate_detection(bad)


def test_check_split_names_the_flag_and_the_list(tmp_path):
    dataset = _write_voc(tmp_path)  # ImageSets/Main/train.txt only
    check_split(dataset, "train", "--train_split")
    lists = tmp_path / "ImageSets" / "Main"
    (lists / "cat_train.txt").write_text("a 1\n")  # a per-class list is not a split
    with pytest.raises(InputError) as info:
        check_split(dataset, "trainval", "--train_split")
    assert str(info.value) == f"--train_split=trainval: no split list {lists / 'trainval.txt'} (have train)"
    for bad in ("../train", "", "a/b", ".hidden"):  # never a path outside ImageSets/Main
        with pytest.raises(InputError, match=r"^--val_split=.*: not a VOC split name"):
            check_split(dataset, bad, "--val_split")
    check_split("shapes", "val", "--val_split")
    with pytest.raises(InputError, match=r"^--train_split=trainval: shapes has no split 'trainval' \(have train, va"):
        check_split("shapes", "trainval", "--train_split")
    check_split("voc/2007", "test[:50%]", "--val_split")  # tfds splits are checked when loaded


def test_tfds_not_prepared_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"voc/2007: not prepared under .*--data_dir"):
        load_records("voc/2007", "train", data_dir=str(tmp_path))


def test_shapes_records():
    records, names = load_records("shapes", "val")
    assert len(records) == 64 and names[0] == "circle"
    r = records[0]
    assert r.image.shape == (r.height, r.width, 3) and r.image.dtype == np.uint8
    assert r.boxes.shape == (len(r.labels), 4) and not r.difficult.any()


# ---------------------------------------------------------------------------------------------------------------
# Pipeline


def _rectangle_records(n=6):
    """Black 60×40 images with one white rectangle each (varied, off-centre) and its box; in-memory records."""
    from inputs.voc import Record
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        image = np.zeros((40, 60, 3), np.uint8)
        x0, y0 = int(rng.integers(2, 20)), int(rng.integers(2, 15))
        x1, y1 = x0 + int(rng.integers(12, 35)), y0 + int(rng.integers(10, 22))
        image[y0:y1, x0:x1] = 255
        records.append(Record(image, 60, 40, np.array([[x0, y0, x1, y1]], np.float32), np.array([0], np.int32),
                              np.array([False]), str(i)))
    return records


def test_compute_anchors_from_records_scales_boxes_and_refuses_too_few_shapes():
    from detection.anchors import AnchorError, compute_anchors, default_anchors
    records = _rectangle_records(12)  # 60×40 images: letterboxed into 48 at scale 0.8
    anchors = compute_anchors(records, 48, "kmeans", seed=0)
    assert anchors.shape == (9, 2) and anchors.dtype == np.float32 and np.all(np.diff(anchors.prod(1)) >= 0)
    wh = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in records]) * 0.8
    assert wh.min() - 1e-4 <= anchors.min() and anchors.max() <= wh.max() + 1e-4
    np.testing.assert_array_equal(anchors, compute_anchors(records, 48, "kmeans", seed=0))
    np.testing.assert_array_equal(compute_anchors(records[:2], 48, "default", seed=0), default_anchors(48))
    with pytest.raises(AnchorError, match="use --anchors=default") as e:
        compute_anchors(records[:2], 48, "kmeans", seed=0)
    assert isinstance(e.value, InputError)


def test_training_augmentation_keeps_boxes_on_the_object():
    records = _rectangle_records()
    size = 48
    ds = detection_dataset(records, ["box"], input_size=size, batch_size=3, training=True, seed=7, max_boxes=4)
    assert ds.element_spec[0].shape.as_list() == [3, size, size, 3]
    epochs = [[tuple(t.numpy() for t in batch) for batch in ds] for _ in range(2)]
    again = [tuple(t.numpy() for t in batch) for batch in
             detection_dataset(records, ["box"], input_size=size, batch_size=3, training=True, seed=7, max_boxes=4)]
    for x, y in zip(epochs[0], again):  # deterministic for a seed
        for a, b in zip(x, y):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(epochs[0][0][1], epochs[1][0][1])  # new draws in the next epoch
    widths = []
    for images, boxes, labels in epochs[0] + epochs[1]:
        assert images.dtype == np.float32 and boxes.dtype == np.float32 and labels.dtype == np.int32
        assert boxes.shape == (3, 4, 4) and labels.shape == (3, 4)
        for image, box, label in zip(images, boxes, labels):
            np.testing.assert_array_equal(label[1:], -1)
            np.testing.assert_array_equal(box[1:], 0)
            if label[0] < 0:  # the rectangle left the input
                continue
            x0, y0, x1, y1 = box[0]
            inside = image[int(np.ceil(y0)) + 1:int(y1) - 1, int(np.ceil(x0)) + 1:int(x1) - 1]
            assert inside.size and inside.mean() > 240  # the box covers bright pixels…
            outside = np.ones(image.shape[:2], bool)
            outside[max(int(y0) - 1, 0):int(np.ceil(y1)) + 1, max(int(x0) - 1, 0):int(np.ceil(x1)) + 1] = False
            assert image[outside].max() < 130  # …and every bright pixel is in the box (black or 114 grey outside)
            widths.append(x1 - x0)
    assert len(widths) >= 10 and np.ptp(widths) > 3  # scale jitter varies the size


def test_training_flips_and_drops_difficult():
    from inputs.voc import Record
    image = np.zeros((32, 32, 3), np.uint8)
    image[4:12, 2:10] = 255
    record = Record(image, 32, 32, np.array([[2, 4, 10, 12], [12, 14, 22, 24]], np.float32),
                    np.array([0, 1], np.int32), np.array([False, True]), "r")
    records = [record] * 16
    ds = detection_dataset(records, ["a", "b"], input_size=32, batch_size=16, training=True, seed=3, max_boxes=3)
    images, boxes, labels = next(iter(ds))
    labels = labels.numpy()
    assert set(labels[:, 0].tolist()) <= {0, -1} and (labels[:, 1:] == -1).all()  # difficult box dropped
    centre = (boxes[:, 0, 0] + boxes[:, 0, 2]).numpy() / 2
    assert (centre[labels[:, 0] == 0] < 16).any() and (centre[labels[:, 0] == 0] > 16).any()  # flipped and not
    ds = detection_dataset(records[:1], ["a", "b"], input_size=32, batch_size=1, training=True, use_difficult=True)
    assert 1 in next(iter(ds))[2].numpy()


def test_evaluation_pipeline_keeps_order_and_last_batch(tmp_path):
    from inputs.voc import eval_arrays
    from models.letterbox import letterbox_params, to_input
    records, names = load_records(_write_voc(tmp_path), "train")
    batches = list(detection_dataset(records, names, input_size=64, batch_size=2, training=False, max_boxes=3))
    assert [b[0].shape[0] for b in batches] == [2, 1]
    boxes = np.concatenate([b[1].numpy() for b in batches])
    labels = np.concatenate([b[2].numpy() for b in batches])
    for r, got_boxes, got_labels in zip(records, boxes, labels):  # order kept, difficult included
        n = len(r.labels)
        np.testing.assert_array_equal(got_labels, np.pad(r.labels, (0, 3 - n), constant_values=-1))
        expected = to_input(r.boxes, letterbox_params(r.height, r.width, 64)).numpy()
        np.testing.assert_allclose(got_boxes[:n], expected, atol=1e-4)
        np.testing.assert_array_equal(got_boxes[n:], 0)
    images, params = eval_arrays(records, 64)
    assert images.shape == (3, 64, 64, 3) and params.shape == (3, 3)
    np.testing.assert_allclose(images, np.concatenate([b[0].numpy() for b in batches]))
    np.testing.assert_allclose(params[0], [1.6, 0, 8])  # 40×30 → 64×48 centred vertically
    assert abs(images[0, 32, 32, 0] - 90) < 3 and images[0, 2, 32, 0] == 114  # image, then grey padding


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def test_voc_ap_by_hand():
    # 5 detections in score order: TP, FP, TP, FP, TP with 4 ground truths.
    # recall    = 1/4, 1/4, 2/4, 2/4, 3/4
    # precision = 1/1, 1/2, 2/3, 2/4, 3/5
    recall = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
    precision = np.array([1.0, 0.5, 2 / 3, 0.5, 0.6])
    # 11-point: t = 0, .1, .2 → max precision at recall ≥ t = 1; t = .3, .4, .5 → max(2/3, .5, .6) = 2/3;
    # t = .6, .7 → 0.6; t = .8, .9, 1 → 0 (recall never reaches them).
    assert voc_ap(recall, precision, True) == pytest.approx((3 * 1 + 3 * 2 / 3 + 2 * 0.6) / 11, abs=1e-12)
    # AUC: envelope 1 on (0, .25], 2/3 on (.25, .5], .6 on (.5, .75], 0 on (.75, 1] → .25 + .25·2/3 + .25·.6
    assert voc_ap(recall, precision, False) == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 0.6, abs=1e-12)
    assert voc_ap(np.array([]), np.array([]), False) == 0.0 and voc_ap(np.array([]), np.array([]), True) == 0.0


def test_evaluate_voc_difficult_and_duplicates_by_hand():
    # Class 0: image 0 has GT A (0,0,10,10) and difficult GT D (20,20,30,30); image 1 has GT B (0,0,10,10).
    # Class 1: only a difficult GT → AP NaN, left out of the mean. Class 2: no GT, one detection → NaN.
    ground_truths = [
        (np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]), np.array([0, 0, 1]),
         np.array([False, True, True])),
        (np.array([[0, 0, 10, 10]]), np.array([0]), np.array([False])),
    ]
    detections = [
        # scores .9 on A (TP), .8 duplicate on A (FP), .7 on D (ignored), .3 class-1 on the difficult GT (ignored)
        (np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
         np.array([0.9, 0.8, 0.7, 0.3]), np.array([0, 0, 0, 1])),
        # .6 misplaced (FP, IoU 25/175 with B), .5 on B (TP), .4 class 2 (no GT)
        (np.array([[5, 5, 15, 15], [0, 0, 10, 9], [0, 0, 5, 5]]), np.array([0.6, 0.5, 0.4]), np.array([0, 0, 2])),
    ]
    result = evaluate_voc(detections, ground_truths, num_classes=3)
    # Class 0, npos = 2, ranks: TP, FP, (ignored), FP, TP
    # recall    = .5, .5, .5, .5, 1       precision = 1, 1/2, 1/2, 1/3, 2/4
    # AUC: envelope 1 on (0, .5], 1/2 on (.5, 1] → .75.
    # 11-point: t ≤ .5 → 1 (6 points), t ≥ .6 → 1/2 (5 points) → 8.5/11
    assert result["ap_auc"][0] == pytest.approx(0.75) and result["ap_voc07"][0] == pytest.approx(8.5 / 11)
    assert math.isnan(result["ap_auc"][1]) and math.isnan(result["ap_voc07"][2])
    assert result["num_gt"] == [2, 0, 0]
    assert result["map_auc"] == pytest.approx(0.75) and result["map_voc07"] == pytest.approx(8.5 / 11)
    # The devkit rule: a detection takes its highest-IoU ground truth even when that one is already matched.
    gt = [(np.array([[0, 0, 10, 10], [0, 2, 10, 12]]), np.array([0, 0]), np.array([False, False]))]
    dets = [(np.array([[0, 0, 10, 10], [0, 0.5, 10, 10.5]]), np.array([0.9, 0.8]), np.array([0, 0]))]
    # second detection: IoU 95/105 with the matched GT 0, 85/115 with GT 1 → FP (a best-unmatched rule would say TP)
    # recall .5, .5; precision 1, .5 → AUC .5
    assert evaluate_voc(dets, gt, 1)["ap_auc"][0] == pytest.approx(0.5)


def _random_detections(seed=0, n_images=20, num_classes=3):
    rng = np.random.default_rng(seed)
    ground_truths, detections = [], []
    for _ in range(n_images):
        n = rng.integers(1, 5)
        # One object per 200-px quadrant of a 400×400 image: ground truths do not overlap, where VOC's devkit
        # matching (highest-IoU ground truth, even if already matched) and COCO's (best unmatched one) differ.
        quadrant = rng.permutation(4)[:n]
        wh = rng.uniform(20, 150, (n, 2))
        xy = np.stack([quadrant % 2, quadrant // 2], 1) * 200 + rng.uniform(0, 1, (n, 2)) * (200 - wh)
        gt = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, num_classes, n)
        ground_truths.append((gt, labels, np.zeros(n, bool)))
        keep = rng.random(n) < 0.85  # some objects missed
        jitter = rng.normal(0, 0.12, (n, 4)) * np.concatenate([wh, wh], 1)
        boxes = (gt + jitter)[keep]
        scores = np.clip(rng.normal(0.7, 0.2, n), 0.01, 1)[keep]
        m = rng.integers(0, 4)  # false positives, lower scores on average
        fxy = rng.uniform(0, 300, (m, 2))
        fp = np.concatenate([fxy, fxy + rng.uniform(20, 150, (m, 2))], 1)
        detections.append((np.concatenate([boxes, fp]), np.concatenate([scores, rng.uniform(0, 0.8, m)]),
                           np.concatenate([labels[keep], rng.integers(0, num_classes, m)])))
    return detections, ground_truths


def test_voc_auc_agrees_with_coco_ap50():
    detections, ground_truths = _random_detections()
    voc = evaluate_voc(detections, ground_truths, 3)
    coco = evaluate_coco(detections, ground_truths, 3)
    assert 0.3 < voc["map_auc"] < 0.95  # a realistic, non-trivial case
    assert abs(voc["map_auc"] - coco["ap50"]) < 0.005, (voc["map_auc"], coco["ap50"])
    assert coco["ap"] < coco["ap50"] and coco["ap75"] < coco["ap50"]
    perfect = [(b, np.linspace(1, 0.5, len(b)), lab) for b, lab, _ in ground_truths]
    assert evaluate_coco(perfect, ground_truths, 3)["ap"] == pytest.approx(1.0)
    assert evaluate_voc(perfect, ground_truths, 3)["map_voc07"] == pytest.approx(1.0)
    empty = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)) for _ in ground_truths]
    assert evaluate_coco(empty, ground_truths, 3) == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    assert evaluate_voc(empty, ground_truths, 3)["map_auc"] == 0.0


def test_voc_classes_come_from_the_training_split(tmp_path, caplog):
    """A name that only the validation list uses neither adds a class nor renumbers the training labels: loading
    the validation split with the training split's names reports it as an unknown class, naming the file."""
    dataset = _write_voc(tmp_path)  # train: bird, cat, dog
    (tmp_path / "Annotations" / "v.xml").write_text(_xml("a.jpg", 40, 30, [("aardvark", 5, 6, 20, 25, 0)]))
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("v\n")
    _, names = load_records(dataset, "train")
    assert names == ["bird", "cat", "dog"]  # 'aardvark' (val only) would have been label 0, shifting every id
    with pytest.raises(InputError, match=r"v\.xml.*unknown class 'aardvark'"):
        load_records(dataset, "val", class_names=names)
    records, _ = load_records(dataset, "val", class_names=names, on_error="skip")
    assert [len(r.labels) for r in records] == [0]


def test_voc_rare_class_in_the_training_split_is_flagged(tmp_path, caplog):
    fixture = [(f"i{i}", f"i{i}.png", 16, 16, [("raccoon", 1, 1, 8, 8, 0)]) for i in range(120)]
    fixture.append(("typo", "typo.png", 16, 16, [("racoon", 1, 1, 8, 8, 0)]))
    dataset = _write_voc(tmp_path, fixture)
    with caplog.at_level(logging.WARNING):
        _, names = load_records(dataset, "train")
    assert names == ["raccoon", "racoon"]
    assert "'racoon' (1)" in caplog.text and "misspelt" in caplog.text


def test_voc_undecodable_image_is_named_or_skipped(tmp_path):
    dataset = _write_voc(tmp_path)
    png = tmp_path / "JPEGImages" / "c.png"
    png.write_bytes(png.read_bytes()[:45])  # header, size and the start of IDAT intact: only decoding finds it
    with pytest.raises(InputError, match=r"c\.png: not a decodable image"):
        load_records(dataset, "train")
    records, _ = load_records(dataset, "train", on_error="skip")
    assert [r.id for r in records] == ["a", "b"]


NOT_UTF8 = b"a\n\xff\xfeb\n"


@pytest.mark.parametrize("which", ["split list", "annotation bytes", "annotation encoding"])
def test_voc_text_that_cannot_be_decoded_is_named(tmp_path, which):
    """Every text file of a VOC set (split lists, XML) that does not decode is one line naming it."""
    dataset = _write_voc(tmp_path)
    if which == "split list":
        path = tmp_path / "ImageSets" / "Main" / "train.txt"
        path.write_bytes(NOT_UTF8)
        needle = "not UTF-8 text (byte 2"
    elif which == "annotation bytes":
        path = tmp_path / "Annotations" / "b.xml"
        path.write_bytes(path.read_bytes().replace(b"<name>cat</name>", b"<name>\xff\xfe</name>"))
        needle = "malformed XML"
    else:
        path = tmp_path / "Annotations" / "b.xml"
        path.write_bytes(b'<?xml version="1.0" encoding="no-such-codec"?>' + path.read_bytes())
        needle = "unreadable XML (LookupError"
    with pytest.raises(InputError) as info:
        load_records(dataset, "train", class_names=["bird", "cat", "dog"])
    message = str(info.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message
    if which != "split list":
        records, _ = load_records(dataset, "train", class_names=["bird", "cat", "dog"], on_error="skip")
        assert [r.id for r in records] == ["a", "c"]


def test_voc_split_list_with_a_byte_order_mark(tmp_path):
    dataset = _write_voc(tmp_path)
    split = tmp_path / "ImageSets" / "Main" / "train.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    assert [r.id for r in load_records(dataset, "train")[0]] == ["a", "b", "c"]


@pytest.mark.parametrize("prefix", ["", "v:"])
def test_voc_namespaced_annotations_parse_like_plain_ones(tmp_path, prefix):
    """``<annotation xmlns="…">`` (default or prefixed namespace): the same objects, not a background image."""
    plain, _ = load_records(_write_voc(tmp_path / "plain"), "train")
    dataset = _write_voc(tmp_path / "ns")
    for xml in (tmp_path / "ns" / "Annotations").iterdir():
        text = xml.read_text()
        if prefix:
            text = re.sub(r"<(/?)(\w+)>", rf"<\1{prefix}\2>", text)
        xml.write_text(text.replace(f"<{prefix}annotation>",
                                    f'<{prefix}annotation xmlns{":" + prefix[:-1] if prefix else ""}="http://x">', 1))
    assert "http://x" in (tmp_path / "ns" / "Annotations" / "a.xml").read_text()
    records, names = load_records(dataset, "train")
    assert names == ["bird", "cat", "dog"]
    for r, p in zip(records, plain):
        assert (r.id, r.width, r.height) == (p.id, p.width, p.height)
        np.testing.assert_array_equal(r.boxes, p.boxes)
        np.testing.assert_array_equal(r.labels, p.labels)
        np.testing.assert_array_equal(r.difficult, p.difficult)


@pytest.mark.parametrize("kind", ["broken", "loop"])
def test_voc_image_that_is_a_bad_link_is_named(tmp_path, kind):
    dataset = _write_voc(tmp_path)
    image = tmp_path / "JPEGImages" / "b.jpg"
    image.unlink()
    image.symlink_to(tmp_path / "gone.jpg" if kind == "broken" else image)
    what = "a broken symbolic link" if kind == "broken" else "a symbolic link loop"
    with pytest.raises(InputError, match=rf"b\.xml: image .*b\.jpg: {what}"):
        load_records(dataset, "train")
    assert [r.id for r in load_records(dataset, "train", on_error="skip")[0]] == ["a", "c"]
