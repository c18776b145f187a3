"""Fine-tune a YOLOv3-style detector (models/yolo.py) on any zoo backbone, evaluate it with VOC/COCO mAP, export it.

    python -m recipes.finetune_yolo --backbone=efficientnet_lite0 --weights=imagenet \\
        --dataset=voc:../shared/data/raccoon --input_size=224 --epochs=30 --freeze_epochs=3 --out_dir=runs/raccoon
    python -m recipes.finetune_yolo --dataset=shapes --input_size=128 --epochs=5        # synthetic, no download

Data (inputs/voc.py): ``shapes``, ``voc:PATH`` (train/val split lists) or a prepared tensorflow-datasets name.
Training images are augmented (flip, scale jitter); validation images are letterboxed. Anchors: k-means (1 − IoU) on
the training boxes at the input scale (``--anchors=kmeans``, recommended: YOLOv3's COCO anchors fit few datasets), or
the COCO anchors scaled to the input size.

Optimisation: Adam (or SGD with momentum 0.9) with decoupled weight decay on conv kernels; the learning rate rises
linearly to ``--lr`` over ``--warmup_epochs`` and is multiplied by 0.1 at each fraction of ``--lr_steps`` of the
training steps (YOLOv3's stepped schedule: 0.8, 0.9). ``--freeze_epochs``: the backbone is frozen (its BatchNorm in
inference mode, no gradient) for the first N epochs, then trained. The head and the backbone have one optimizer
each, both built before the first step: the backbone's slots and Adam bias correction start when it is unfrozen,
instead of seeing the head's step count (Adam would otherwise take several times too large steps on the
pretrained features for hundreds of steps). One learning rate drives both.

Every epoch: the loss parts, the learning rate and the val mAP (VOC07 11-point and area-under-curve, at IoU 0.5, in
ORIGINAL image pixels, through ``models.yolo.predict``) go to ``history.json`` and TensorBoard; a checkpoint (model,
both optimizers, epoch) is written. Rerunning the same command after a kill resumes after the last finished epoch
(the data order restarts, not replayed bit-exactly); other settings in the same ``--out_dir`` are refused
(``settings.json``). Strategies: ``--strategy=default|mirrored`` (training/distribute.py; ``--batch_size`` is global).

Writes under ``--out_dir``: ``settings.json``, ``history.json``, ``summary.json`` (final val map50_voc07,
map50_auc, COCO ap/ap50/ap75, best epoch, anchors, timings, export report), ``last_weights.npz`` and
``best_weights.npz`` (best val VOC07 mAP; models.weights format, load into ``models.yolo.build_detector``),
``predictions.png`` (val images: predictions with scores in red, ground truth in green), ``tensorboard/``,
``checkpoints/``, and with ``--export``: ``model_float32.tflite`` (+ ``model_int8.tflite``). The float export is
checked against Keras on raw head outputs (max|Δ|); the int8 one by its val mAP and its raw-output drift (mean
and max |Δ|).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import flags

from recipes._cli import UsageError, run

FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", "efficientnet_lite0", "Backbone: zoo model name (python -m zoo list) or a spec .json "
                                                      "path; its stride 8/16/32 features feed the head.")
flags.DEFINE_string("weights", "imagenet", "Backbone initial weights: a zoo tag (e.g. 'imagenet'), a .npz path "
                                           "(zoo format), or '' for random init (training from scratch).")
flags.DEFINE_string("dataset", "shapes", "Detection data: 'shapes' (built-in synthetic boxes), 'voc:PATH' (VOC "
                                         "layout with ImageSets/Main/train.txt and val.txt) or a prepared "
                                         "tensorflow-datasets name such as 'voc/2007'.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_string("val_split", "val", "Split used for validation, mAP and the predictions figure.")
flags.DEFINE_integer("input_size", 224, "Square network input size (a multiple of 32).", lower_bound=32)
flags.DEFINE_integer("epochs", 30, "Training epochs (one pass over the training images each).", lower_bound=1)
flags.DEFINE_integer("batch_size", 8, "Global batch size.", lower_bound=1)
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer: Adam, or SGD with momentum 0.9 (YOLOv3's).")
flags.DEFINE_float("lr", 1e-3, "Peak learning rate (after the warm-up, before the steps of --lr_steps).")
flags.DEFINE_list("lr_steps", ["0.8", "0.9"], "Fractions of the training steps at which the learning rate is "
                                              "multiplied by 0.1 (YOLOv3: 0.8,0.9); empty for a constant rate.")
flags.DEFINE_float("warmup_epochs", 1.0, "Epochs of linear learning-rate warm-up from 0 (may be fractional; 0: none).",
                   lower_bound=0.0)
flags.DEFINE_integer("freeze_epochs", 0, "Keep the backbone frozen (no gradient, BatchNorm in inference mode) for the "
                                         "first N epochs, then train everything.", lower_bound=0)
flags.DEFINE_float("weight_decay", 5e-4, "Decoupled weight decay on conv kernels (w -= lr * wd * w each step).",
                   lower_bound=0.0)
flags.DEFINE_enum("anchors", "kmeans", ["kmeans", "default"], "Anchors: 'kmeans' (9 clusters of the training boxes "
                                                               "at the input scale) or 'default' (YOLOv3's COCO "
                                                               "anchors scaled to --input_size).")
flags.DEFINE_enum("box_loss", "xywh", ["xywh", "giou"], "Box loss: YOLOv3's 'xywh' (BCE on centres, L2 on log "
                                                         "sizes) or 'giou' (1 - GIoU).")
flags.DEFINE_integer("head_width", None, "Head width at stride 32 (half at 16, a quarter at 8; default 128), a "
                                         "multiple of 4.", lower_bound=4)
flags.DEFINE_integer("bn_recal_batches", 10, "Before every evaluation, set the BatchNorm moving statistics of the "
                     "trainable layers to the exact average over this many batches of training images (letterboxed "
                     "as for evaluation, in order): 'precise BN'. The exponential averages lag behind the weights in "
                     "short runs; a from-scratch backbone then scores nothing in inference mode. 0: off.",
                     lower_bound=0)
flags.DEFINE_integer("limit", None, "Use only the first N training images (quick runs).", lower_bound=1)
flags.DEFINE_integer("val_limit", None, "Use only the first N validation images.", lower_bound=1)
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "tf.distribute strategy (training/distribute.py).")
flags.DEFINE_integer("cpu_replicas", 1, "With --strategy=mirrored on a host without GPUs: logical CPU devices to "
                                        "replicate over.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and augmentation, k-means.")
flags.DEFINE_enum("on_error", "raise", ["raise", "skip"], "Bad annotations: 'raise' (one-line error naming the file) "
                                                          "or 'skip' (drop them, one warning with counts).")
flags.DEFINE_enum("export", "float32", ["none", "float32", "int8"], "TFLite export after training: 'none', "
                                                                    "'float32', or 'int8' (full-integer, calibrated "
                                                                    "on training images; the float file too).")
flags.DEFINE_integer("representative_images", 64, "Training images calibrating the int8 export.", lower_bound=1)
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string("out_dir", "runs/finetune_yolo", "Directory for every output and the resumable state.")

# Settings that must match to resume in an existing --out_dir (strategy, export and progress may change).
_RESUME_KEYS = ("backbone", "weights", "dataset", "val_split", "input_size", "epochs", "batch_size", "optimizer",
                "lr", "lr_steps", "warmup_epochs", "freeze_epochs", "weight_decay", "anchors", "box_loss",
                "head_width", "limit", "val_limit", "seed", "on_error", "bn_recal_batches")
PARITY_IMAGES = 4
FIGURE_IMAGES = 8
FIGURE_SCORE = 0.3


# ---------------------------------------------------------------------------------------------------------------
# Without TensorFlow


def lr_at(step: int, total: int, peak: float, warmup_steps: int, fractions: tuple[float, ...]) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to ``peak`` over ``warmup_steps``, then ×0.1 for every
    fraction f of ``fractions`` with ``step >= f·total``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * 0.1 ** sum(step >= f * total for f in fractions)


def _lr_steps() -> tuple[float, ...]:
    try:
        steps = tuple(float(s) for s in FLAGS.lr_steps)
    except ValueError:
        raise UsageError(f"--lr_steps={','.join(FLAGS.lr_steps)}: not a list of numbers") from None
    if any(not 0 < f < 1 for f in steps) or list(steps) != sorted(steps):
        raise UsageError(f"--lr_steps={','.join(FLAGS.lr_steps)}: fractions must be increasing and in (0, 1)")
    return steps


def _settings(spec) -> dict:
    from models.spec import encode
    return {**{k: getattr(FLAGS, k) for k in _RESUME_KEYS}, "spec": encode(spec)}


def _check_flags():
    """Everything checkable without TensorFlow; returns (spec, weights path or None)."""
    import zoo
    from common import io as io_lib
    from inputs.voc import validate_detection
    from models.spec import SpecError, check_input_size
    from training import weights as W

    spec = zoo.get_spec(FLAGS.backbone)
    if FLAGS.input_size % 32:
        raise UsageError(f"--input_size={FLAGS.input_size}: must be a multiple of 32 (the head's coarsest stride)")
    try:
        check_input_size(spec, FLAGS.input_size, "--input_size")
    except SpecError as e:
        raise UsageError(str(e)) from None
    if FLAGS.head_width is not None and FLAGS.head_width % 4:
        raise UsageError(f"--head_width={FLAGS.head_width}: must be a multiple of 4")
    if FLAGS.lr <= 0:
        raise UsageError(f"--lr={FLAGS.lr}: must be positive")
    _lr_steps()
    if FLAGS.warmup_epochs >= FLAGS.epochs:
        raise UsageError(f"--warmup_epochs={FLAGS.warmup_epochs:g} must be below --epochs={FLAGS.epochs}")
    if FLAGS.freeze_epochs > FLAGS.epochs:
        raise UsageError(f"--freeze_epochs={FLAGS.freeze_epochs} is above --epochs={FLAGS.epochs}")
    if FLAGS.strategy != "mirrored" and FLAGS.cpu_replicas > 1:
        raise UsageError(f"--cpu_replicas={FLAGS.cpu_replicas} needs --strategy=mirrored")
    if FLAGS.batch_size % FLAGS.cpu_replicas:
        raise UsageError(f"--batch_size={FLAGS.batch_size} does not split over --cpu_replicas={FLAGS.cpu_replicas}")
    weights = W.resolve_weights(spec, FLAGS.weights)
    validate_detection(FLAGS.dataset)
    if os.path.exists(FLAGS.out_dir) and not os.path.isdir(FLAGS.out_dir):
        raise UsageError(f"--out_dir={FLAGS.out_dir}: exists and is not a directory")
    saved = os.path.join(FLAGS.out_dir, "settings.json")
    if os.path.exists(saved):
        try:
            with open(saved) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"{saved}: unreadable ({e}); use a new --out_dir") from None
        new = _settings(spec)
        diff = sorted(k for k in new if old.get(k) != new[k])
        if diff:
            raise UsageError(f"--out_dir={FLAGS.out_dir} holds a run with other settings ({', '.join(diff)}); rerun "
                             "with the same flags to resume, or use a new --out_dir")
    if FLAGS.freeze_epochs and not FLAGS.weights:
        io_lib.eprint("note: --freeze_epochs with --weights='' freezes a randomly initialised backbone")
    return spec, weights


# ---------------------------------------------------------------------------------------------------------------
# Training


class Trainer:
    """One optimizer step of the detector under a strategy, with the backbone frozen or not.

    Two optimizers (head: variables named ``yolo_*``; backbone: the rest), both built over their variables at
    construction (outside any tf.function). ``set_frozen`` retraces the step: a frozen backbone gets no gradient and
    its BatchNorm runs in inference mode (Keras' ``trainable=False``). ``set_lr`` sets both learning rates.
    """

    def __init__(self, model, anchors, input_size: int, *, optimizer: str = "adam", weight_decay: float = 0.0,
                 box_loss: str = "xywh", strategy=None):
        import keras
        import tensorflow as tf

        from models import yolo
        self.tf, self.yolo = tf, yolo
        self.model, self.input_size, self.box_loss = model, input_size, box_loss
        self.anchors = tf.constant(anchors, tf.float32)
        self.strategy = strategy or tf.distribute.get_strategy()
        yolo.set_backbone_trainable(model, True)
        self.head_vars = [v for v in model.trainable_variables if v.path.startswith("yolo_")]
        self.backbone_vars = [v for v in model.trainable_variables if not v.path.startswith("yolo_")]

        def make(variables):
            wd = weight_decay or None
            opt = (keras.optimizers.Adam(1e-3, weight_decay=wd) if optimizer == "adam"
                   else keras.optimizers.SGD(1e-3, momentum=0.9, weight_decay=wd))
            if wd:
                opt.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) < 4])
            opt.build(variables)  # outside tf.function: tracing the slot creation costs ~15 s
            return opt

        with self.strategy.scope():
            self.head_opt, self.backbone_opt = make(self.head_vars), make(self.backbone_vars)
        self.frozen = None
        self._step = None

    def set_lr(self, lr: float) -> None:
        self.head_opt.learning_rate = lr
        self.backbone_opt.learning_rate = lr

    def set_frozen(self, frozen: bool) -> None:
        if frozen == self.frozen:
            return
        self.frozen = frozen
        self.yolo.set_backbone_trainable(self.model, not frozen)
        tf, strategy = self.tf, self.strategy
        replicas = strategy.num_replicas_in_sync

        def replica_step(images, boxes, t8, t16, t32):
            variables = self.head_vars + ([] if frozen else self.backbone_vars)
            with tf.GradientTape() as tape:
                pred = self.model(images, training=True)
                loss, parts = self.yolo.yolo_loss([t8, t16, t32], pred, boxes, self.anchors, self.input_size,
                                                  box_loss=self.box_loss)
                scaled = loss / replicas  # replica gradients are summed
            grads = tape.gradient(scaled, variables)
            n = len(self.head_vars)
            self.head_opt.apply(grads[:n], self.head_vars)
            if not frozen:
                self.backbone_opt.apply(grads[n:], self.backbone_vars)
            return {"loss": loss, **parts}

        @tf.function
        def step(batch):
            out = strategy.run(replica_step, args=batch)
            return {k: strategy.reduce("SUM", v, axis=None) / replicas for k, v in out.items()}
        self._step = step

    def step(self, batch) -> dict:
        """One step on a (distributed) batch ``(images, boxes, t8, t16, t32)``; returns float loss parts."""
        return {k: float(v) for k, v in self._step(batch).items()}


def with_targets(ds, anchors, input_size: int, num_classes: int):
    """Adds the three YOLO target tensors to ``(images, boxes, labels)`` batches → ``(images, boxes, t8, t16, t32)``."""
    import tensorflow as tf

    from models import yolo
    specs = tuple(tf.TensorSpec((input_size // s, input_size // s, 3, 5 + num_classes), tf.float32)
                  for s in yolo.STRIDES)

    def add(images, boxes, labels):
        t = tf.map_fn(lambda bl: yolo.encode_targets(bl[0], bl[1], anchors, input_size, num_classes),
                      (boxes, labels), fn_output_signature=specs)
        return (images, boxes, *t)
    return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE)


def compute_anchors(records, input_size: int, mode: str, seed: int):
    """(9, 2) anchors: k-means of the non-difficult training boxes scaled by their letterbox factor, or the COCO
    defaults."""
    import numpy as np

    from models import yolo
    if mode == "default":
        return yolo.default_anchors(input_size)
    wh = [(r.boxes[~r.difficult, 2:] - r.boxes[~r.difficult, :2]) * min(input_size / r.width, input_size / r.height)
          for r in records]
    try:
        return yolo.kmeans_anchors(np.concatenate(wh), 9, seed)
    except ValueError as e:
        raise UsageError(f"--anchors=kmeans: {e}; use --anchors=default") from None


# ---------------------------------------------------------------------------------------------------------------
# Evaluation, figure, export


def load_images(records) -> list:
    """uint8 (H, W, 3) arrays of the records (decoded from file or taken as they are)."""
    import numpy as np
    from PIL import Image
    out = []
    for r in records:
        if isinstance(r.image, str):
            with Image.open(r.image) as im:
                out.append(np.asarray(im.convert("RGB")))
        else:
            out.append(np.asarray(r.image, np.uint8))
    return out


def evaluate(model, images, records, anchors, input_size: int, num_classes: int, coco: bool = False):
    """``models.yolo.predict`` on the images → (detections in original pixels, VOC metrics [+ COCO])."""
    from metrics.detection import evaluate_coco, evaluate_voc
    from models import yolo
    dets = yolo.predict(model, images, anchors, input_size)
    gts = [(r.boxes, r.labels, r.difficult) for r in records]
    voc = evaluate_voc(dets, gts, num_classes)
    metrics = {"map50_voc07": voc["map_voc07"], "map50_auc": voc["map_auc"]}
    if coco:
        metrics.update({f"coco_{k}": v for k, v in evaluate_coco(dets, gts, num_classes).items()})
    return dets, metrics


class TFLiteDetector:
    """A LiteRT interpreter called like the Keras detector: ``(B, S, S, 3)`` float → the three raw outputs in Keras
    order (matched by shape: the converter reorders them), one image per ``invoke``."""

    def __init__(self, path: str, keras_shapes: list[tuple]):
        from export import litert
        self.litert, self.it = litert, litert.interpreter(path)
        details = self.it.get_output_details()
        by_shape = {tuple(int(d) for d in o["shape"][1:]): o for o in details}
        self.outputs = [by_shape[tuple(s)] for s in keras_shapes]
        self.input = self.it.get_input_details()[0]

    def __call__(self, x, training=False):
        import numpy as np
        results = [[] for _ in self.outputs]
        for image in np.asarray(x, np.float32):
            self.it.set_tensor(self.input["index"], self.litert.quantize(image[None], self.input))
            self.it.invoke()
            for out, detail in zip(results, self.outputs):
                out.append(self.litert.dequantize(self.it.get_tensor(detail["index"]), detail)[0])
        return [np.stack(r) for r in results]


def draw_predictions(images, dets, records, class_names, path: str, title: str) -> None:
    """A grid of images with predicted boxes (score ≥ `FIGURE_SCORE`, red, labelled) and ground truth (green)."""
    from reports.plots import _pyplot, _save
    plt = _pyplot()
    n = len(images)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, (boxes, scores, classes), r in zip(axes.flat, images, dets, records):
        ax.imshow(image)
        for (x0, y0, x1, y1) in r.boxes:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        for (x0, y0, x1, y1), s, c in zip(boxes, scores, classes):
            if s < FIGURE_SCORE:
                continue
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.5))
            ax.text(x0, y0, f"{class_names[c]} {s:.2f}", color="white", fontsize=7, va="bottom",
                    bbox={"facecolor": "red", "alpha": 0.7, "pad": 1, "lw": 0})
        ax.set_title(r.id, fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    plt.close(fig)


def export_and_check(model, out_dir: str, mode: str, val_images, val_records, train_records, anchors,
                     input_size: int, num_classes: int) -> dict:
    """Float32 (and int8) TFLite export; float: raw-output parity with Keras; int8: val mAP of the int8 model."""
    import numpy as np

    from export import litert
    from inputs.voc import eval_arrays
    shapes = [tuple(int(d) for d in o.shape[1:]) for o in model.outputs]
    report = {}
    path = os.path.join(out_dir, "model_float32.tflite")
    report["float32"] = {"path": path, "bytes": litert.export(model, path, "float32")}
    x, _ = eval_arrays(val_records[:PARITY_IMAGES], input_size)
    keras_out = [np.asarray(o) for o in model(x, training=False)]
    lite_out = TFLiteDetector(path, shapes)(x)
    report["float32"]["parity_max_abs"] = float(max(np.abs(a - b).max() for a, b in zip(keras_out, lite_out)))
    report["float32"]["parity_images"] = len(x)
    if mode == "int8":
        calib, _ = eval_arrays(train_records[:FLAGS.representative_images], input_size)
        path = os.path.join(out_dir, "model_int8.tflite")
        size = litert.export(model, path, "int8", lambda: ([im[None]] for im in calib))
        lite8 = TFLiteDetector(path, shapes)
        int8_out = lite8(x)  # raw-output drift from quantization (not a pass/fail check: int8 is lossy)
        drift = [np.abs(a - b) for a, b in zip(keras_out, int8_out)]
        _, metrics = evaluate(lite8, val_images, val_records, anchors, input_size, num_classes)
        report["int8"] = {"path": path, "bytes": size, "calibration_images": len(calib),
                          "raw_max_abs_diff": float(max(d.max() for d in drift)),
                          "raw_mean_abs_diff": float(np.mean([d.mean() for d in drift])),
                          "raw_keras_mean_abs": float(np.mean([np.abs(a).mean() for a in keras_out])), **metrics}
    return report


# ---------------------------------------------------------------------------------------------------------------
# Main


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    spec, weights_path = _check_flags()
    fractions = _lr_steps()
    started = time.time()

    from inputs import voc
    train_records, class_names = voc.load_records(FLAGS.dataset, "train", on_error=FLAGS.on_error,
                                                  data_dir=FLAGS.data_dir)
    val_records, _ = voc.load_records(FLAGS.dataset, FLAGS.val_split, class_names=class_names,
                                      on_error=FLAGS.on_error, data_dir=FLAGS.data_dir)
    train_records, val_records = train_records[:FLAGS.limit], val_records[:FLAGS.val_limit]
    if not train_records or not val_records:
        raise UsageError(f"--dataset={FLAGS.dataset}: empty train or {FLAGS.val_split} split")
    os.makedirs(FLAGS.out_dir, exist_ok=True)

    from training.distribute import make_strategy
    strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)  # before any other TensorFlow work

    import keras
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from common import io as io_lib
    from models import yolo
    from models.weights import save_npz
    from search.tflite_timing import host, versions
    from training import bn

    io_lib.write_json(os.path.join(FLAGS.out_dir, "settings.json"), _settings(spec))
    keras.utils.set_random_seed(FLAGS.seed)
    num_classes, S = len(class_names), FLAGS.input_size
    anchors = compute_anchors(train_records, S, FLAGS.anchors, FLAGS.seed)
    train_ds = with_targets(voc.detection_dataset(train_records, class_names, input_size=S,
                                                  batch_size=FLAGS.batch_size, training=True, seed=FLAGS.seed),
                            anchors, S, num_classes)
    steps = max(1, len(train_records) // FLAGS.batch_size)
    total = FLAGS.epochs * steps
    warmup_steps = int(round(FLAGS.warmup_epochs * steps))
    val_images = load_images(val_records)

    with strategy.scope():
        model = yolo.build_detector(spec, num_classes, S, weights=weights_path, head_width=FLAGS.head_width)
        trainer = Trainer(model, anchors, S, optimizer=FLAGS.optimizer, weight_decay=FLAGS.weight_decay,
                          box_loss=FLAGS.box_loss, strategy=strategy)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt_dir = os.path.join(FLAGS.out_dir, "checkpoints")
    ckpt = tf.train.Checkpoint(model=model, head_opt=trainer.head_opt, backbone_opt=trainer.backbone_opt,
                               epoch=epoch_var)
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=1)
    history = []
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        with open(os.path.join(ckpt_dir, "history.json")) as f:
            history = json.load(f)[:int(epoch_var.numpy())]
        io_lib.eprint(f"resuming from epoch {int(epoch_var.numpy())} in {FLAGS.out_dir}")
    predictor = _Forward(model)
    recal_ds = voc.detection_dataset(train_records, class_names, input_size=S, batch_size=FLAGS.batch_size,
                                     training=False).take(FLAGS.bn_recal_batches)

    recalibrator = bn.BNRecalibrator(model)

    def recalibrate():
        if FLAGS.bn_recal_batches:
            recalibrator(images for images, _, _ in recal_ds)
    writer = tf.summary.create_file_writer(os.path.join(FLAGS.out_dir, "tensorboard"))
    distribute = strategy.experimental_distribute_dataset

    while int(epoch_var.numpy()) < FLAGS.epochs:
        epoch = int(epoch_var.numpy())
        trainer.set_frozen(epoch < FLAGS.freeze_epochs)
        t0, sums, n = time.time(), {}, 0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{FLAGS.epochs}", unit="step", file=sys.stderr,
                   disable=not FLAGS.progress, leave=False)
        for batch in distribute(train_ds):
            if n == steps:
                break
            lr = lr_at(epoch * steps + n, total, FLAGS.lr, warmup_steps, fractions)
            trainer.set_lr(lr)
            parts = trainer.step(batch)
            if not all(np.isfinite(v) for v in parts.values()):
                raise SystemExit(f"finetune_yolo: non-finite loss at epoch {epoch + 1} step {n + 1} ({parts}); "
                                 "lower --lr")
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            bar.update()
            bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{lr:.2g}")
        bar.close()
        train_s = time.time() - t0
        recalibrate()
        _, metrics = evaluate(predictor, val_images, val_records, anchors, S, num_classes)
        record = {"epoch": epoch + 1, "lr": lr, "frozen": bool(trainer.frozen),
                  **{f"train_{k}": v / max(n, 1) for k, v in sums.items()},
                  **{f"val_{k}": v for k, v in metrics.items()}, "train_s": train_s, "seconds": time.time() - t0}
        history.append(record)
        with writer.as_default(step=epoch + 1):
            for k, v in record.items():
                if isinstance(v, float):
                    tf.summary.scalar(k, v)
        writer.flush()
        print(f"epoch {epoch + 1}/{FLAGS.epochs}: loss {record['train_loss']:.3f}, val mAP50 VOC07 "
              f"{metrics['map50_voc07']:.4f} AUC {metrics['map50_auc']:.4f} ({record['seconds']:.0f} s)",
              file=sys.stderr, flush=True)
        if metrics["map50_voc07"] >= max(h["val_map50_voc07"] for h in history):
            save_npz(model, os.path.join(ckpt_dir, f"best_e{epoch + 1}.npz"))
        epoch_var.assign(epoch + 1)
        io_lib.write_json(os.path.join(ckpt_dir, "history.json"), history)
        manager.save(checkpoint_number=epoch + 1)

    # Outputs (recomputed from the checkpoint when a finished run is rerun).
    best = max(history, key=lambda h: (h["val_map50_voc07"], h["epoch"]))
    best_npz = os.path.join(ckpt_dir, f"best_e{best['epoch']}.npz")
    if os.path.exists(best_npz):
        with open(best_npz, "rb") as f:
            data = f.read()
        from common.io import atomic_write
        atomic_write(os.path.join(FLAGS.out_dir, "best_weights.npz"), lambda f: f.write(data))
    for name in os.listdir(ckpt_dir):
        if name.startswith("best_e") and name != os.path.basename(best_npz):
            os.remove(os.path.join(ckpt_dir, name))
    save_npz(model, os.path.join(FLAGS.out_dir, "last_weights.npz"))
    io_lib.write_json(os.path.join(FLAGS.out_dir, "history.json"), history)
    dets, final = evaluate(predictor, val_images, val_records, anchors, S, num_classes, coco=True)
    with writer.as_default(step=FLAGS.epochs):
        tf.summary.scalar("val_coco_ap", final["coco_ap"])
    writer.flush()
    k = min(FIGURE_IMAGES, len(val_images))
    draw_predictions(val_images[:k], dets[:k], val_records[:k], class_names,
                     os.path.join(FLAGS.out_dir, "predictions.png"),
                     f"{spec.name} ({FLAGS.weights or 'scratch'}) at {S}: val mAP50 VOC07 {final['map50_voc07']:.3f} "
                     f"- red: predictions (score >= {FIGURE_SCORE}), green: ground truth")
    export = None
    if FLAGS.export != "none":
        export = export_and_check(model, FLAGS.out_dir, FLAGS.export, val_images, val_records, train_records,
                                  anchors, S, num_classes)
    train_s = sum(h["seconds"] for h in history)
    summary = {"backbone": spec.name, "weights": FLAGS.weights, "dataset": FLAGS.dataset, "classes": class_names,
               "train_images": len(train_records), "val_images": len(val_records),
               "map50_voc07": final["map50_voc07"], "map50_auc": final["map50_auc"], "coco_ap": final["coco_ap"],
               "coco_ap50": final["coco_ap50"], "coco_ap75": final["coco_ap75"],
               "best_epoch": best["epoch"], "best_map50_voc07": best["val_map50_voc07"],
               "epochs": FLAGS.epochs, "steps_per_epoch": steps, "input_size": S,
               "train_minutes": train_s / 60.0, "command_minutes": (time.time() - started) / 60.0,
               "anchors": [[round(float(v), 2) for v in a] for a in anchors], "params": int(model.count_params()),
               "settings": _settings(spec), "strategy": FLAGS.strategy, "replicas": strategy.num_replicas_in_sync,
               "export": export, "host": host(), "versions": versions("tensorflow", "keras", "ai-edge-litert",
                                                                        "numpy", "pycocotools")}
    io_lib.write_json(os.path.join(FLAGS.out_dir, "summary.json"), summary)
    line = (f"{spec.name} ({FLAGS.weights or 'scratch'}): val mAP50 VOC07 {final['map50_voc07']:.4f}, AUC "
            f"{final['map50_auc']:.4f}, COCO AP {final['coco_ap']:.4f} / AP50 {final['coco_ap50']:.4f}; "
            f"{train_s / 60:.1f} min")
    if export:
        line += f"; TFLite float32 max|d| {export['float32']['parity_max_abs']:.2e}"
        if "int8" in export:
            line += f", int8 val mAP50 VOC07 {export['int8']['map50_voc07']:.4f}"
    print(line)


class _Forward:
    """The detector's inference call compiled once per batch shape (``models.yolo.predict`` calls it)."""

    def __init__(self, model):
        import tensorflow as tf
        self._fn = tf.function(lambda x: model(x, training=False))

    def __call__(self, x, training=False):
        return self._fn(x)


if __name__ == "__main__":
    run(main)
