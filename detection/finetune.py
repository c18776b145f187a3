"""Fine-tuning a YOLOv3-style detector (``models.yolo``) on any zoo backbone: the run's configuration
(`FinetuneConfig`), its validation without TensorFlow (`validate`) and the run itself (`run`), which trains,
evaluates with VOC/COCO mAP and exports. ``recipes.finetune_yolo`` is its command line (the fields are its flags,
and messages name them as ``--field``).

Data (``inputs.voc``): ``shapes``, ``voc:PATH`` (split lists) or a prepared tensorflow-datasets name; the model
trains on ``train_split`` (default ``train``; e.g. ``trainval``) and is evaluated on ``val_split`` (default ``val``).
Class names come from the training split.
Training images are augmented (flip, scale jitter); validation images are letterboxed. Anchors
(``detection.anchors``): k-means (1 − IoU) on the training boxes at the input scale (``anchors="kmeans"``,
recommended: YOLOv3's COCO anchors fit few datasets), or the COCO anchors scaled to the input size.

Optimisation (``detection.trainer``): Adam or SGD with decoupled weight decay on conv kernels, a linear warm-up over
``warmup_epochs`` and ×0.1 at each fraction of ``lr_steps`` of the training steps. ``freeze_epochs``: the backbone is
frozen (its BatchNorm in inference mode, no gradient) for the first N epochs, then trained. Before every evaluation
the trainable BatchNorm layers get "precise BN" statistics over ``bn_recal_batches`` letterboxed training batches
(``training.bn``).

Every epoch: the loss parts, the learning rate and the mAP of the evaluation split (VOC07 11-point and
area-under-curve, at IoU 0.5, in ORIGINAL image pixels, through ``detection.predict.predict``; keys ``val_*``, or
``test_*`` when ``val_split`` is a test split, `is_test_split`) go to ``history.json`` and TensorBoard; a checkpoint
(model, both optimizers, epoch: ``common.epoch_state.EpochState`` under ``checkpoints/``) is written. Rerunning the
same configuration after a kill resumes after the last finished epoch (the data order restarts, not replayed
bit-exactly); other settings in the same ``out_dir`` are refused (``settings.json``, ``common.rundir.RunDir``).
Strategies: ``default`` or ``mirrored`` (``training.distribute``; ``batch_size`` is global).

Writes under ``out_dir``: ``settings.json``, ``history.json``, ``summary.json`` (``eval_split``; the last epoch's
map50_voc07, map50_auc, per-class AP50 by class name, COCO ap/ap50/ap75; best epoch, anchors, timings, export report
with the float32 parity max|Δ| over up to ``detection.tflite.PARITY_IMAGES`` images), ``last_weights.npz`` and
``best_weights.npz`` (best VOC07 mAP epoch; ``models.weights`` format, load into ``models.yolo.build_detector``),
``predictions.png`` (evaluation images: predictions with scores in red, ground truth in green), ``tensorboard/``,
``checkpoints/``, and with ``export``: ``model_float32.tflite`` (+ ``model_int8.tflite``), checked by
``detection.tflite.export_and_check``. When ``val_split`` is a test split no epoch is selected on it (that would tune
on the test set): there is no ``best_weights.npz``, the result is the last epoch (``last_weights.npz``), and
``summary.json`` says so (``selection``).

Nothing here imports TensorFlow until `run` has validated the configuration.
"""
from __future__ import annotations

import dataclasses
import os
import time

from common.checks import DECAY_MAX, LR_MAX, ConfigError, check_at_least, check_at_most, check_one_of
from common.errors import Diverged
from common.io import atomic_write, eprint, progress_bar
from common.rundir import RunDir
from detection.anchors import MODES as ANCHOR_MODES

# Choices of the string fields (detection.loss.BOX_LOSSES repeated here: that module imports TensorFlow).
CHOICES = {"optimizer": ("adam", "sgd"), "anchors": ANCHOR_MODES, "box_loss": ("xywh", "giou"),
           "strategy": ("default", "mirrored"), "on_error": ("raise", "skip"), "export": ("none", "float32", "int8")}
# Lower bounds of the numeric fields (None is allowed where the default is None).
LOWER_BOUNDS = {"input_size": 32, "epochs": 1, "batch_size": 1, "warmup_epochs": 0.0, "freeze_epochs": 0,
                "weight_decay": 0.0, "head_width": 4, "bn_recal_batches": 0, "limit": 1, "val_limit": 1,
                "cpu_replicas": 1, "representative_images": 1}
# Settings that must match to resume in an existing out_dir (strategy, export and progress may change).
RESUME_KEYS = ("backbone", "weights", "dataset", "train_split", "val_split", "input_size", "epochs", "batch_size",
               "optimizer", "lr", "lr_steps", "warmup_epochs", "freeze_epochs", "weight_decay", "anchors", "box_loss",
               "head_width", "limit", "val_limit", "seed", "on_error", "bn_recal_batches")
# Settings added after runs were made: an older settings.json without one is read with the value every run had then.
ADDED_SETTINGS = {"train_split": "train"}
FIGURE_IMAGES = 8  # evaluation images in predictions.png


class NonFiniteLoss(Diverged):
    """A training step gave a non-finite loss (the learning rate is too high for the run)."""


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run; the fields are ``recipes.finetune_yolo``'s flags (see its ``--help``).

    ``backbone`` is a zoo name or a spec ``.json`` path; ``weights`` a zoo tag, an ``.npz`` path or '' (random
    init). ``lr_steps`` holds fractions as numbers or number strings, kept as given in ``settings.json`` (the command
    line gives strings). ``head_width``, ``limit``, ``val_limit`` and ``data_dir`` may be None.
    """
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    dataset: str = "shapes"
    data_dir: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    input_size: int = 224
    epochs: int = 30
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_steps: tuple = ("0.8", "0.9")
    warmup_epochs: float = 1.0
    freeze_epochs: int = 0
    weight_decay: float = 5e-4
    anchors: str = "kmeans"
    box_loss: str = "xywh"
    head_width: int | None = None
    bn_recal_batches: int = 10
    limit: int | None = None
    val_limit: int | None = None
    strategy: str = "default"
    cpu_replicas: int = 1
    seed: int = 0
    on_error: str = "raise"
    export: str = "float32"
    representative_images: int = 64
    progress: bool = True
    out_dir: str = "runs/finetune_yolo"


def lr_fractions(lr_steps) -> tuple[float, ...]:
    """``lr_steps`` (numbers or number strings) as increasing floats in (0, 1).

    Raises:
        ConfigError: not numbers, not increasing, or outside (0, 1).
    """
    text = ",".join(str(s) for s in lr_steps)
    try:
        steps = tuple(float(s) for s in lr_steps)
    except (TypeError, ValueError):
        raise ConfigError(f"--lr_steps={text}: not a list of numbers") from None
    if any(not 0 < f < 1 for f in steps) or list(steps) != sorted(steps):
        raise ConfigError(f"--lr_steps={text}: fractions must be increasing and in (0, 1)")
    return steps


def settings(config: FinetuneConfig, spec) -> dict:
    """The run's identity in ``settings.json``: the `RESUME_KEYS` fields and the encoded backbone spec."""
    from models.spec import encode
    values = {k: getattr(config, k) for k in RESUME_KEYS}
    return {**values, "lr_steps": list(config.lr_steps), "spec": encode(spec)}


# What a run writes in --out_dir besides settings.json: checked before any work (common.checks.check_run_outputs).
OUT_FILES = ("best_weights.npz", "last_weights.npz", "history.json", "predictions.png", "summary.json")
OUT_DIRS = ("checkpoints", "tensorboard")


def run_dir(config: FinetuneConfig, spec) -> RunDir:
    """The run directory ``config.out_dir`` with this run's settings."""
    return RunDir(config.out_dir, settings(config, spec), defaults=ADDED_SETTINGS, files=OUT_FILES, dirs=OUT_DIRS)


def is_test_split(split: str) -> bool:
    """Whether ``split`` names a test split (``test``, ``test[:50%]``, ``test2007``…): reported as ``test_*``, and
    never used to choose the weights."""
    return split.strip().lower().startswith("test")


def eval_label(config: FinetuneConfig) -> str:
    """The prefix of the evaluation split's keys (``history.json``, TensorBoard, ``summary.json``): ``test`` for a
    test split, else ``val``."""
    return "test" if is_test_split(config.val_split) else "val"


def _check_fields(config: FinetuneConfig) -> None:
    # The command line enforces these already (absl enums and lower bounds); in-process configs get the same checks.
    check_one_of(**{name: (getattr(config, name), choices) for name, choices in CHOICES.items()})
    check_at_least(**{name: (getattr(config, name), low) for name, low in LOWER_BOUNDS.items()})
    check_at_most(lr=(config.lr, LR_MAX), weight_decay=(config.weight_decay, DECAY_MAX))


def validate(config: FinetuneConfig):
    """Everything checkable without TensorFlow (which it does not import); writes nothing.

    Args:
        config: the run.

    Returns:
        ``(spec, weights path or None)``: the backbone's ``models.spec.ModelSpec`` and its initial weights.

    Raises:
        InputError: (subclasses) a bad field or combination (`ConfigError`), an unknown backbone or weights tag
            (``zoo.ZooError``), a missing weights file, an unusable dataset (``inputs.classification.DataError``), an
            ``out_dir`` holding a run with other settings (``common.rundir.SettingsMismatch``).
    """
    import zoo
    from inputs.voc import check_split, validate_detection
    from models.spec import check_input_size
    from training.weights import resolve_weights

    _check_fields(config)
    spec = zoo.get_spec(config.backbone)
    from common.checks import check_rgb_spec
    check_rgb_spec(spec, "--backbone")
    if config.input_size % 32:
        raise ConfigError(f"--input_size={config.input_size}: must be a multiple of 32 (the head's coarsest stride)")
    check_input_size(spec, config.input_size, "--input_size")
    from models.spec import SpecError
    from models.walk import walk
    try:
        walk(spec, config.input_size).endpoints()  # feature maps at strides 8, 16, 32, before any write
    except SpecError as e:
        raise ConfigError(f"--backbone={config.backbone}: {spec.name} at --input_size={config.input_size} cannot "
                          f"feed the detection head: {e.message}") from None
    if config.head_width is not None and config.head_width % 4:
        raise ConfigError(f"--head_width={config.head_width}: must be a multiple of 4")
    if config.lr <= 0:
        raise ConfigError(f"--lr={config.lr}: must be positive")
    lr_fractions(config.lr_steps)
    if config.warmup_epochs >= config.epochs:
        raise ConfigError(f"--warmup_epochs={config.warmup_epochs:g} must be below --epochs={config.epochs}")
    if config.freeze_epochs > config.epochs:
        raise ConfigError(f"--freeze_epochs={config.freeze_epochs} is above --epochs={config.epochs}")
    if config.strategy != "mirrored" and config.cpu_replicas > 1:
        raise ConfigError(f"--cpu_replicas={config.cpu_replicas} needs --strategy=mirrored")
    if config.batch_size % config.cpu_replicas:
        raise ConfigError(f"--batch_size={config.batch_size} does not split over "
                          f"--cpu_replicas={config.cpu_replicas}")
    if config.train_split == config.val_split:
        raise ConfigError(f"--train_split={config.train_split} and --val_split={config.val_split}: the same split; "
                          f"evaluate on images the model does not train on")
    weights = resolve_weights(spec, config.weights)
    validate_detection(config.dataset)
    check_split(config.dataset, config.train_split, "--train_split")
    check_split(config.dataset, config.val_split, "--val_split")
    run_dir(config, spec).check()
    return spec, weights


def run(config: FinetuneConfig) -> dict:
    """Validates the configuration, then trains, evaluates and exports (module docstring); resumes a killed run.

    Args:
        config: the run.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        InputError: as `validate`, or an empty split / anchors k-means cannot fit (before anything is written).
        NonFiniteLoss: a training step diverged.
    """
    spec, weights_path = validate(config)
    if config.freeze_epochs and not config.weights:
        eprint("note: --freeze_epochs with --weights='' freezes a randomly initialised backbone")
    fractions = lr_fractions(config.lr_steps)
    started = time.time()

    from inputs import voc
    train_records, class_names = voc.load_records(config.dataset, config.train_split, on_error=config.on_error,
                                                  data_dir=config.data_dir)  # the class names come from here
    val_records, _ = voc.load_records(config.dataset, config.val_split, class_names=class_names,
                                      on_error=config.on_error, data_dir=config.data_dir)
    train_records, val_records = train_records[:config.limit], val_records[:config.val_limit]
    if not train_records or not val_records:
        raise ConfigError(f"--dataset={config.dataset}: empty {config.train_split} or {config.val_split} split")
    shared = {r.id for r in train_records} & {r.id for r in val_records}
    if shared:
        eprint(f"warning: --train_split={config.train_split} and --val_split={config.val_split} share {len(shared)} "
               f"image(s) (e.g. {min(shared)}): their scores are not held out")

    from training.distribute import make_strategy
    strategy = make_strategy(config.strategy, config.cpu_replicas)  # before any other TensorFlow work

    import keras
    import tensorflow as tf

    from detection.anchors import compute_anchors
    from detection.predict import Forward, load_images
    from detection.targets import with_targets
    from detection.trainer import Trainer
    from models import yolo
    from models.weights import save_npz
    from training import bn

    num_classes, S = len(class_names), config.input_size
    anchors = compute_anchors(train_records, S, config.anchors, config.seed)  # may refuse the data: before any write
    rd = run_dir(config, spec)
    rd.start()
    keras.utils.set_random_seed(config.seed)
    train_ds = with_targets(voc.detection_dataset(train_records, class_names, input_size=S,
                                                  batch_size=config.batch_size, training=True, seed=config.seed),
                            anchors, S, num_classes)
    steps = max(1, len(train_records) // config.batch_size)
    val_images = load_images(val_records)

    with strategy.scope():
        model = yolo.build_detector(spec, num_classes, S, weights=weights_path, head_width=config.head_width)
        trainer = Trainer(model, anchors, S, optimizer=config.optimizer, weight_decay=config.weight_decay,
                          box_loss=config.box_loss, strategy=strategy)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    state = rd.epoch_state(epoch_var, model=model, head_opt=trainer.head_opt, backbone_opt=trainer.backbone_opt)
    history = state.restore()
    if history is None:
        history = []
    else:
        eprint(f"resuming from epoch {int(epoch_var.numpy())} in {config.out_dir}")
    predictor = Forward(model)
    recal_ds = voc.detection_dataset(train_records, class_names, input_size=S, batch_size=config.batch_size,
                                     training=False).take(config.bn_recal_batches)
    recalibrator = bn.BNRecalibrator(model)

    def recalibrate():
        if config.bn_recal_batches:
            recalibrator(images for images, _, _ in recal_ds)
    writer = tf.summary.create_file_writer(rd.file("tensorboard"))
    context = _Run(config, S, num_classes, anchors, val_images, val_records, predictor)
    schedule = (steps, config.epochs * steps, int(round(config.warmup_epochs * steps)), fractions)
    label = eval_label(config)

    while int(epoch_var.numpy()) < config.epochs:
        epoch = int(epoch_var.numpy())
        record = _train_epoch(context, trainer, strategy.experimental_distribute_dataset(train_ds), epoch, schedule,
                              recalibrate)
        history.append(record)
        with writer.as_default(step=epoch + 1):
            for k, v in record.items():
                if isinstance(v, float):
                    tf.summary.scalar(k, v)
        writer.flush()
        eprint(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.3f}, {config.val_split} mAP50 VOC07 "
               f"{record[f'{label}_map50_voc07']:.4f} AUC {record[f'{label}_map50_auc']:.4f} "
               f"({record['seconds']:.0f} s)")
        if label != "test" and record[f"{label}_map50_voc07"] >= max(h[f"{label}_map50_voc07"] for h in history):
            save_npz(model, os.path.join(state.dir, f"best_e{epoch + 1}.npz"))
        epoch_var.assign(epoch + 1)
        state.save(history)
    return _finish(context, rd, state.dir, spec, model, history, writer, train_records, class_names, steps,
                   strategy.num_replicas_in_sync, started)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the evaluation of every epoch and the final outputs share."""
    config: FinetuneConfig
    input_size: int
    num_classes: int
    anchors: object
    val_images: list
    val_records: list
    predictor: object

    def evaluate(self, model=None, coco: bool = False, per_class: bool = False):
        from detection.predict import evaluate
        return evaluate(model or self.predictor, self.val_images, self.val_records, self.anchors, self.input_size,
                        self.num_classes, coco=coco, per_class=per_class)


def _train_epoch(context: _Run, trainer, batches, epoch: int, schedule: tuple, recalibrate) -> dict:
    """One epoch of training, then precise BN and the evaluation split's metrics; returns the epoch's history
    record."""
    import numpy as np

    from detection.trainer import lr_at
    config = context.config
    steps, total, warmup_steps, fractions = schedule
    trainer.set_frozen(epoch < config.freeze_epochs)
    t0, sums, n = time.time(), {}, 0
    bar = progress_bar(config.progress, steps, f"epoch {epoch + 1}/{config.epochs}", unit="step")
    for batch in batches:
        if n == steps:
            break
        lr = lr_at(epoch * steps + n, total, config.lr, warmup_steps, fractions)
        trainer.set_lr(lr)
        parts = trainer.step(batch)
        if not all(np.isfinite(v) for v in parts.values()):
            raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1} step {n + 1} ({parts}); lower --lr")
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        bar.update()
        bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{lr:.2g}")
    bar.close()
    train_s = time.time() - t0
    recalibrate()
    _, metrics = context.evaluate()
    return {"epoch": epoch + 1, "lr": lr, "frozen": bool(trainer.frozen),
            **{f"train_{k}": v / max(n, 1) for k, v in sums.items()},
            **{f"{eval_label(config)}_{k}": v for k, v in metrics.items()}, "train_s": train_s,
            "seconds": time.time() - t0}


def _finish(context: _Run, rd: RunDir, ckpt_dir: str, spec, model, history: list, writer, train_records,
            class_names, steps: int, replicas: int, started: float) -> dict:
    """The outputs of a finished run (recomputed from the checkpoint when a finished run is rerun)."""
    import tensorflow as tf

    from detection.figures import FIGURE_SCORE, draw_predictions
    from detection.tflite import export_and_check
    from models.weights import save_npz
    from search.tflite_timing import host, versions
    config, S = context.config, context.input_size
    label, split = eval_label(config), config.val_split
    best = _select(history, label)
    best_npz = os.path.join(ckpt_dir, f"best_e{best['epoch']}.npz") if best else None
    if best_npz and os.path.exists(best_npz):
        with open(best_npz, "rb") as f:
            data = f.read()
        atomic_write(rd.file("best_weights.npz"), lambda f: f.write(data))
    for name in os.listdir(ckpt_dir):
        if name.startswith("best_e") and (best_npz is None or name != os.path.basename(best_npz)):
            os.remove(os.path.join(ckpt_dir, name))
    save_npz(model, rd.file("last_weights.npz"))
    rd.write_json("history.json", history)
    dets, final = context.evaluate(coco=True, per_class=True)
    with writer.as_default(step=config.epochs):
        tf.summary.scalar(f"{label}_coco_ap", final["coco_ap"])
    writer.flush()
    k = min(FIGURE_IMAGES, len(context.val_images))
    draw_predictions(context.val_images[:k], dets[:k], context.val_records[:k], class_names,
                     rd.file("predictions.png"),
                     f"{spec.name} ({config.weights or 'scratch'}) at {S}: {split} mAP50 VOC07 "
                     f"{final['map50_voc07']:.3f} - red: predictions (score >= {FIGURE_SCORE}), green: ground truth")
    export = None
    if config.export != "none":
        export = export_and_check(model, config.out_dir, config.export, context.val_images, context.val_records,
                                  train_records, context.anchors, S, context.num_classes,
                                  representative_images=config.representative_images)
    # Per class (training-split names): NaN (no non-difficult ground truth in the split) is written as null.
    per_class = {name: (None if ap != ap else ap) for name, ap in zip(class_names, final["ap50_voc07_per_class"])}
    per_class_auc = {name: (None if ap != ap else ap) for name, ap in zip(class_names, final["ap50_auc_per_class"])}
    train_s = sum(h["seconds"] for h in history)
    summary = {"backbone": spec.name, "weights": config.weights, "dataset": config.dataset, "classes": class_names,
               "train_split": config.train_split, "eval_split": split,
               "train_images": len(train_records), f"{label}_images": len(context.val_records),
               "map50_voc07": final["map50_voc07"], "map50_auc": final["map50_auc"],
               "class_ap50_voc07": per_class, "class_ap50_auc": per_class_auc, "coco_ap": final["coco_ap"],
               "coco_ap50": final["coco_ap50"], "coco_ap75": final["coco_ap75"],
               "best_epoch": best["epoch"] if best else None,
               "best_map50_voc07": best[f"{label}_map50_voc07"] if best else None,
               "selection": (f"best_weights.npz: the epoch of best {split} map50_voc07" if best else
                             f"last_weights.npz: the last epoch; none is chosen on the test split {split!r} "
                             f"(that would tune on the test set)"),
               "epochs": config.epochs, "steps_per_epoch": steps, "input_size": S,
               "train_minutes": train_s / 60.0, "command_minutes": (time.time() - started) / 60.0,
               "anchors": [[round(float(v), 2) for v in a] for a in context.anchors],
               "params": int(model.count_params()), "settings": rd.settings, "strategy": config.strategy,
               "replicas": replicas, "export": export,
               "host": host(), "versions": versions("tensorflow", "keras", "ai-edge-litert", "numpy", "pycocotools")}
    rd.write_json("summary.json", summary)
    classes = ", ".join(f"{name} {'n/a' if ap is None else f'{ap:.3f}'}" for name, ap in per_class.items())
    line = (f"{spec.name} ({config.weights or 'scratch'}): {split} mAP50 VOC07 {final['map50_voc07']:.4f}, AUC "
            f"{final['map50_auc']:.4f}, COCO AP {final['coco_ap']:.4f} / AP50 {final['coco_ap50']:.4f}; "
            f"AP50 VOC07 per class: {classes}; {train_s / 60:.1f} min")
    if not best:
        line += f"; weights: last epoch (none chosen on the test split {split})"
    if export:
        line += (f"; TFLite float32 max|d| {export['float32']['parity_max_abs']:.2e} over "
                 f"{export['float32']['parity_images']} images")
        if "int8" in export:
            line += f", int8 {split} mAP50 VOC07 {export['int8']['map50_voc07']:.4f}"
    print(line)
    return summary


def _select(history: list, label: str) -> dict | None:
    """The history record of the epoch whose weights become ``best_weights.npz`` (best VOC07 mAP, the later on a
    tie), or None on a test split: choosing an epoch by its test score is tuning on the test set."""
    if label == "test":
        return None
    return max(history, key=lambda h: (h[f"{label}_map50_voc07"], h["epoch"]))
