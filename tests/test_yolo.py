"""models.yolo (the detector's structure and weights) and the detection package: IoU, targets, decode round trip,
NMS, loss (values, ignore mask, overfitting), anchors, prediction back to original pixels. A tiny backbone at 64×64
keeps it fast."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone, write_spec

import zoo
from detection import anchors as A
from detection import iou as I
from detection.decode import decode, nms
from detection.loss import yolo_loss
from detection.predict import predict
from detection.targets import encode_targets
from inputs.classification import SHAPES_CLASSES, shapes_boxes
from metrics import detection as metrics_detection
from models import spec as S
from models import yolo
from models.builder import build
from models.letterbox import letterbox_params, to_input
from models.weights import named_weights, read_npz, save_npz

SIZE = 64
C = 3
ANCHORS = A.default_anchors(SIZE)
TINY = tiny_backbone("tiny_yolo_backbone", SIZE)


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    return str(write_spec(tmp_path_factory.mktemp("yolo"), TINY))


@pytest.fixture(scope="module")
def detector(spec_path):
    return yolo.build_detector(spec_path, C, SIZE, head_width=16)


def _logits(targets, anchors=ANCHORS, big=12.0):
    """Raw outputs that decode exactly to the positive boxes of batched targets (inverse sigmoid / log)."""
    out = []
    for level, t in enumerate(targets):
        t = np.asarray(t, np.float64)
        stride, g = yolo.STRIDES[level], t.shape[1]
        gx, gy = np.meshgrid(np.arange(g), np.arange(g))
        grid = np.stack([gx, gy], -1)[:, :, None, :]
        pos = t[..., 4:5] > 0
        off = np.clip((t[..., :2] + t[..., 2:4]) / (2 * stride) - grid, 1e-6, 1 - 1e-6)
        twh = np.log(np.maximum(t[..., 2:4] - t[..., :2], 1e-6) / anchors[3 * level:3 * level + 3])
        box = np.where(pos, np.concatenate([np.log(off / (1 - off)), twh], -1), 0.0)
        out.append(np.concatenate([box, np.where(pos, big, -big), np.where(t[..., 5:] > 0, big, -big)], -1)
                   .astype(np.float32))
    return out


def _batch(targets):
    return [tf.stack(level) for level in zip(*targets)]


# Boxes whose shapes equal anchors 1, 4 and 8 (one per level), centres off the grid lines, plus a padding row.
SHAPED = [(1, (20.3, 30.7), 2), (4, (41.2, 13.9), 0), (8, (29.5, 34.1), 1)]


def _shaped_boxes():
    boxes = [[cx - ANCHORS[i, 0] / 2, cy - ANCHORS[i, 1] / 2, cx + ANCHORS[i, 0] / 2, cy + ANCHORS[i, 1] / 2]
             for i, (cx, cy), _ in SHAPED]
    return np.array(boxes + [[0, 0, 0, 0]], np.float32), np.array([c for *_, c in SHAPED] + [-1], np.int32)


def test_iou_one_definition_numpy_and_tensorflow_agree():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [3, 3, 3, 8]], np.float64)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [3, 3, 3, 8]], np.float64)
    np.testing.assert_allclose(np.diag(I.iou_matrix(a, b)), [50 / 150, 0.0, 1.0, 0.0])  # empty union → 0, no NaN
    assert metrics_detection.iou_matrix is I.iou_matrix  # the metrics use the same IoU
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 50, (2, 6, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(1, 40, (2, 6, 2))], -1)
    ref = I.iou_matrix(boxes[0], boxes[1])
    tf_iou = I.iou(tf.constant(boxes[0, :, None], tf.float32), tf.constant(boxes[1, None], tf.float32)).numpy()
    np.testing.assert_allclose(tf_iou, ref, rtol=1e-5, atol=1e-6)
    g = I.giou(tf.constant(boxes[0, :, None], tf.float32), tf.constant(boxes[1, None], tf.float32)).numpy()
    assert np.all(g <= tf_iou + 1e-6) and np.all(g >= -1)
    far = I.giou(tf.constant([[0.0, 0, 1, 1]]), tf.constant([[9.0, 9, 10, 10]])).numpy()
    np.testing.assert_allclose(far, [0.0 - (100 - 2) / 100], rtol=1e-5)
    # Shapes aligned at the origin: min(w)·min(h) / (w·h + w'·h' − min(w)·min(h)), NumPy and TF alike.
    wh_a, wh_b = boxes[0, :, 2:] - boxes[0, :, :2], boxes[1, :, 2:] - boxes[1, :, :2]
    inter = np.minimum(wh_a[:, None, 0], wh_b[None, :, 0]) * np.minimum(wh_a[:, None, 1], wh_b[None, :, 1])
    manual = inter / (wh_a.prod(1)[:, None] + wh_b.prod(1)[None] - inter)
    np.testing.assert_array_equal(I.wh_iou_matrix(wh_a, wh_b), manual)
    tf_wh = I.wh_iou(tf.constant(wh_a[:, None], tf.float32), tf.constant(wh_b[None], tf.float32)).numpy()
    np.testing.assert_allclose(tf_wh, manual, rtol=1e-5)


def test_encode_targets_assigns_anchor_level_cell_slot():
    boxes, labels = _shaped_boxes()
    targets = [t.numpy() for t in encode_targets(boxes, labels, ANCHORS, SIZE, C)]
    assert [t.shape for t in targets] == [(8, 8, 3, 8), (4, 4, 3, 8), (2, 2, 3, 8)]
    assert sum(t[..., 4].sum() for t in targets) == 3  # the padding row is ignored
    for row, (i, (cx, cy), cls) in enumerate(SHAPED):
        level, slot, stride = i // 3, i % 3, yolo.STRIDES[i // 3]
        cell = targets[level][int(cy // stride), int(cx // stride), slot]
        np.testing.assert_allclose(cell[:4], boxes[row], atol=1e-5)
        assert cell[4] == 1 and list(cell[5:]) == [float(c == cls) for c in range(C)]
    # The same inside tf.data (pure TF ops, dynamic number of boxes).
    ds = tf.data.Dataset.from_tensors((boxes, labels)).map(lambda b, l: encode_targets(b, l, ANCHORS, SIZE, C))
    for a, b in zip(next(iter(ds)), targets):
        np.testing.assert_array_equal(a.numpy(), b)


def test_decode_inverts_encode():
    boxes = np.array([[3, 4, 13, 20], [30.5, 8, 52, 30], [6, 10, 60, 58], [40, 44, 47, 49]], np.float32)
    labels = np.array([0, 2, 1, 2], np.int32)
    y = _logits(_batch([encode_targets(boxes, labels, ANCHORS, SIZE, C)]))
    out, scores = (t.numpy()[0] for t in decode(y, ANCHORS, SIZE))
    assert out.shape == (3 * (64 + 16 + 4), 4) and scores.shape == (out.shape[0], C)
    hit = scores.max(1) > 0.5
    order = np.lexsort(out[hit].T[::-1])
    np.testing.assert_allclose(out[hit][order], boxes[np.lexsort(boxes.T[::-1])], atol=1e-3)
    np.testing.assert_array_equal(scores[hit][order].argmax(1), labels[np.lexsort(boxes.T[::-1])])


def test_nms_suppresses_duplicates_per_class_and_keeps_x0y0x1y1():
    boxes = tf.constant([[[10, 10, 30, 30], [11, 10, 31, 31], [40, 40, 60, 50], [10, 11, 30, 30]]], tf.float32)
    scores = tf.constant([[[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.0, 0.6]]], tf.float32)
    b, s, c, v = nms(boxes, scores, max_total=10)
    assert b.shape == (1, 10, 4) and s.shape == (1, 10) and c.shape == (1, 10) and v.shape == (1,)
    assert c.dtype == tf.int32 and v.dtype == tf.int32 and int(v[0]) == 3
    np.testing.assert_allclose(b[0, :3], [[10, 10, 30, 30], [40, 40, 60, 50], [10, 11, 30, 30]])
    np.testing.assert_allclose(s[0, :3], [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(c[0, :3], [0, 0, 1])


def test_loss_is_near_zero_for_perfect_logits_and_respects_the_ignore_mask():
    boxes, labels = _shaped_boxes()
    targets = _batch([encode_targets(boxes, labels, ANCHORS, SIZE, C)])
    gt = tf.constant(boxes[None])
    perfect = _logits(targets)
    for mode, keys in (("xywh", {"xy", "wh", "obj", "cls"}), ("giou", {"giou", "obj", "cls"})):
        total, parts = yolo_loss(targets, perfect, gt, ANCHORS, SIZE, box_loss=mode)
        assert set(parts) == keys and float(total) < 1e-2
        assert math.isclose(float(total), sum(float(v) for v in parts.values()), rel_tol=1e-5, abs_tol=1e-6)
    # A negative slot (slot 0 beside the positive slot 1 of SHAPED[0]) predicting the ground-truth box confidently:
    # ignored at ignore_thresh 0.5, an objectness error of about 12 when nothing can be ignored.
    fake = [t.numpy().copy() for t in targets]
    (_, (cx, cy), _), stride = SHAPED[0], yolo.STRIDES[0]
    fake[0][0, int(cy // stride), int(cx // stride), 0] = fake[0][0, int(cy // stride), int(cx // stride), 1]
    pred = _logits(fake)
    assert float(yolo_loss(targets, pred, gt, ANCHORS, SIZE)[1]["obj"]) < 1e-2
    assert float(yolo_loss(targets, pred, gt, ANCHORS, SIZE, ignore_thresh=1.0)[1]["obj"]) > 11
    # A tw, th error of 0.3 at the stride-8 positive costs ½·(0.3² + 0.3²)·(2 − w·h/S²).
    off = [p.copy() for p in perfect]
    off[0][..., 2:4] += 0.3 * (targets[0].numpy()[..., 4:5] > 0)
    wh = float(yolo_loss(targets, off, gt, ANCHORS, SIZE)[1]["wh"])
    assert math.isclose(wh, 0.09 * (2 - ANCHORS[SHAPED[0][0]].prod() / SIZE ** 2), rel_tol=1e-4)
    logits = [tf.Variable(o) for o in off]
    with tf.GradientTape() as tape:
        giou = yolo_loss(targets, logits, gt, ANCHORS, SIZE, box_loss="giou")[1]["giou"]
    grad = tape.gradient(giou, logits)[0].numpy()
    assert float(giou) > 0.1 and np.isfinite(grad).all() and np.abs(grad[..., 2:4]).max() > 0
    with pytest.raises(ValueError, match="box_loss"):
        yolo_loss(targets, perfect, gt, ANCHORS, SIZE, box_loss="ciou")


@pytest.mark.slow
def test_loss_decreases_when_overfitting_a_tiny_batch(spec_path):
    tf.keras.utils.set_random_seed(0)
    model = yolo.build_detector(spec_path, len(SHAPES_CLASSES), SIZE, head_width=32)
    images, objects = shapes_boxes(4, SIZE, seed=3)
    boxes = np.zeros((4, 3, 4), np.float32)
    labels = -np.ones((4, 3), np.int32)
    for b, objs in enumerate(objects):
        for j, (cls, *box) in enumerate(objs):
            boxes[b, j], labels[b, j] = box, cls
    anchors = A.default_anchors(SIZE)
    targets = _batch([encode_targets(boxes[b], labels[b], anchors, SIZE, len(SHAPES_CLASSES))
                      for b in range(4)])
    x, gt = tf.constant(images, tf.float32), tf.constant(boxes)
    opt = keras.optimizers.Adam(3e-3)
    opt.build(model.trainable_variables)  # outside tf.function: tracing the slot creation costs ~15 s

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, _ = yolo_loss(targets, model(x, training=True), gt, anchors, SIZE)
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    losses = [float(step()) for _ in range(30)]
    final = float(yolo_loss(targets, model(x, training=True), gt, anchors, SIZE)[0])
    assert np.isfinite(losses).all() and final < 0.5 * losses[0], (losses[0], final)


def test_kmeans_anchors_recovers_clusters_deterministically():
    rng = np.random.default_rng(1)
    centres = np.array([[10, 20], [40, 30], [90, 80]], np.float64)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    a = A.kmeans_anchors(wh, k=3, seed=0)
    assert a.shape == (3, 2) and a.dtype == np.float32
    np.testing.assert_allclose(a, centres, rtol=0.03)
    np.testing.assert_array_equal(a, A.kmeans_anchors(wh, k=3, seed=0))
    np.testing.assert_allclose(A.kmeans_anchors(wh, k=3, seed=7), centres, rtol=0.03)
    with pytest.raises(ValueError, match="distinct box shapes"):
        A.kmeans_anchors(wh[:5], k=9)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        A.kmeans_anchors(np.ones(9), k=3)
    d = A.default_anchors(416)
    assert d.shape == (9, 2) and d.dtype == np.float32 and np.all(np.diff(d.prod(1)) > 0)
    np.testing.assert_array_equal(d[[0, 8]], [[10, 13], [373, 326]])


def test_detector_structure_outputs_and_freezing(detector):
    model = detector
    assert all(l.__class__.__module__.startswith("keras.src.layers") for l in model.layers), "stock layers only"
    y = model(np.zeros((2, SIZE, SIZE, 3), np.float32), training=False)
    assert [tuple(t.shape) for t in y] == [(2, 8, 8, 3, 5 + C), (2, 4, 4, 3, 5 + C), (2, 2, 2, 3, 5 + C)]
    backbone = {l.name for l in build(S.decode(TINY), features=True, input_size=SIZE).layers}
    head = {l.name for l in model.layers} - backbone
    assert head and all(n.startswith("yolo_") for n in head)
    assert not any(n.startswith("yolo_") for n in backbone)
    bias = model.get_layer("yolo_s8_pred").bias.numpy().reshape(3, 5 + C)
    np.testing.assert_allclose(bias[:, 4], math.log(0.01 / 0.99), rtol=1e-6)
    assert not bias[:, :4].any() and not bias[:, 5:].any()
    n_head = sum(len(model.get_layer(n).trainable_weights) for n in head)
    yolo.set_backbone_trainable(model, False)
    try:
        assert all(v.path.startswith("yolo_") for v in model.trainable_weights)
        assert len(model.trainable_weights) == n_head
        assert all(not l.trainable for l in model.layers if not l.name.startswith("yolo_"))
    finally:
        yolo.set_backbone_trainable(model, True)
    assert len(model.trainable_weights) > n_head
    with pytest.raises(S.SpecError, match="input_size"):
        yolo.build_detector(S.decode(TINY), C, 48)


def test_backbone_weights_load_by_name(spec_path, tmp_path):
    spec = S.decode(TINY)
    source = build(spec, input_size=SIZE, classes=10)  # with a classifier, which the detector must skip
    for v in source.weights:
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype("float32"))
    path = str(tmp_path / "tiny.npz")
    save_npz(source, path)
    arrays = read_npz(path)
    model = yolo.build_detector(spec, C, SIZE, weights=path, head_width=8)
    loaded = {k: v for k, v in named_weights(model).items() if not k.startswith("yolo_")}
    assert loaded and all(np.array_equal(v, arrays[k]) for k, v in loaded.items())
    # The zoo's ImageNet Lite0 checkpoint (with its head conv and classifier) into the features backbone.
    # models does not import zoo: the caller resolves the name and the tag.
    lite_path = zoo.weights_path("efficientnet_lite0", "imagenet")
    lite = yolo.build_detector(zoo.get_spec("efficientnet_lite0"), 20, SIZE, weights=lite_path, head_width=8)
    arrays = read_npz(lite_path)
    assert np.array_equal(lite.get_layer("stem_conv").kernel.numpy(), arrays["stem_conv/kernel"])
    with pytest.raises(S.SpecError, match="zoo.get_spec"):
        yolo.build_detector("efficientnet_lite0", 20, SIZE)
    with pytest.raises(S.SpecError, match="zoo.weights_path"):
        yolo.build_detector(spec_path, 20, SIZE, weights="imagenet")


class _Stub:
    """A 'model' whose outputs decode to fixed input-pixel boxes."""

    def __init__(self, boxes, labels):
        self.outputs = _logits(_batch([encode_targets(boxes, labels, ANCHORS, SIZE, C)]))

    def __call__(self, x, training=False):
        assert tuple(x.shape) == (1, SIZE, SIZE, 3) and not training
        return self.outputs


def test_predict_maps_boxes_back_to_original_pixels(detector):
    h, w = 40, 80  # letterboxed into 64×64: scale 0.8, pad_y 16
    original = np.array([[10, 5, 50, 30], [60.5, 2, 78, 38]], np.float32)
    params = letterbox_params(h, w, SIZE)
    stub = _Stub(to_input(original, params).numpy(), np.array([2, 0], np.int32))
    (boxes, scores, classes), = predict(stub, [np.zeros((h, w, 3), np.uint8)], ANCHORS, SIZE)
    order = np.argsort(boxes[:, 0])
    np.testing.assert_allclose(boxes[order], original, atol=1e-2)
    np.testing.assert_array_equal(classes[order], [2, 0])
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and classes.dtype == np.int32
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-12.0)) ** 2, rtol=1e-5)
    # The real detector on images of other sizes: boxes inside each original image.
    images = [np.random.default_rng(0).integers(0, 255, (37, 90, 3), np.uint8), np.zeros((70, 50, 3), np.uint8)]
    results = predict(detector, images, ANCHORS, SIZE, batch_size=1, score_threshold=0.0, max_total=20)
    for im, (b, s, c) in zip(images, results):
        assert b.shape == (len(s), 4) and c.shape == (len(s),) and 0 < len(s) <= 20
        assert b.dtype == np.float32 and s.dtype == np.float32 and c.dtype == np.int32
        assert np.all(b >= 0) and np.all(b[:, [0, 2]] <= im.shape[1]) and np.all(b[:, [1, 3]] <= im.shape[0])
        assert np.all(np.diff(s) <= 0) and np.all((c >= 0) & (c < C))
