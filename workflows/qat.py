"""Quantization-aware training and int8 export of a spec (``python -m recipes.qat``, whose ``--help`` documents the
steps and which layers quantize): the config, its TensorFlow-free validation, and the run on the tf_keras twin
(building blocks in `training.qat`).

Writes ``output`` (default ``OUT_DIR/model_int8_qat.tflite``), ``OUT_DIR/weights.npz`` (the fine-tuned float weights,
zoo format) and ``OUT_DIR/qat_report.json``, all atomically.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

from common.checks import (
    LR_MAX,
    ConfigError,
    check_activation_memory,
    check_at_least,
    check_at_most,
    check_one_of,
    check_out_dir,
    check_rgb_spec,
    check_writable,
)
from training.weights import checked_weights_file

QAT_PREPROCESSING = ("fold", "layer")
REPORT = "qat_report.json"
WEIGHTS = "weights.npz"
DEFAULT_OUTPUT = "model_int8_qat.tflite"
TWIN_CHECK_EXAMPLES = 32
TWIN_WARN = 1e-4  # relative max|Δ| above which the twin is reported as suspicious
VERSIONS = ("tensorflow", "tf-keras", "keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy")
SETTINGS = ("model", "weights", "classes", "dataset", "input_size", "epochs", "steps_per_epoch", "batch_size",
            "optimizer", "lr", "augment", "limit", "val_limit", "calibration_batches", "int8_io", "preprocessing",
            "seed")


@dataclasses.dataclass(frozen=True)
class QatConfig:
    """One QAT run; the fields are the flags of ``recipes.qat`` (see its ``--help``)."""

    model: str
    weights: str = ""
    classes: int | None = None
    dataset: str = "shapes"
    data_dir: str | None = None
    on_bad_image: str = "raise"  # folder: images that cannot be decoded: raise (naming the file) or skip
    input_size: int | None = None
    epochs: int = 1
    steps_per_epoch: int | None = None
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-4
    augment: str = "standard"
    limit: int | None = None
    val_limit: int = 1000
    calibration_batches: int = 10
    int8_io: bool = False
    preprocessing: str = "fold"  # fold (mean/std in the stem conv, all-int8 file) | layer (the preprocess layer, float)
    out_dir: str = "runs/qat"
    output: str | None = None
    seed: int = 0
    progress: bool = True
    produced_by: str = ""  # the command line recorded in the report


@dataclasses.dataclass(frozen=True)
class QatPlan:
    """What a config resolves to before TensorFlow is imported."""

    spec: object
    spec_file: str
    size: int
    classes: int
    weights: str | None
    output: str


@dataclasses.dataclass(frozen=True)
class QatResult:
    report: dict
    output: str  # the .tflite as given (report["tflite"] is absolute)
    weights_path: str
    report_path: str


def validate(config: QatConfig) -> QatPlan:
    """Everything checkable without TensorFlow.

    Raises:
        InputError (subclasses): a bad value, named by its flag.
    """
    import zoo
    from inputs import classification as data
    from models.spec import check_input_size

    check_at_least(classes=(config.classes, 2), input_size=(config.input_size, 8), epochs=(config.epochs, 0),
                   steps_per_epoch=(config.steps_per_epoch, 1), batch_size=(config.batch_size, 1),
                   lr=(config.lr, 0.0), limit=(config.limit, 1), val_limit=(config.val_limit, 1),
                   calibration_batches=(config.calibration_batches, 0))
    check_at_most(lr=(config.lr, LR_MAX))
    check_one_of(optimizer=(config.optimizer, ("adam", "sgd")), augment=(config.augment, data.AUGMENTS),
                 preprocessing=(config.preprocessing, QAT_PREPROCESSING))
    spec = zoo.get_spec(config.model)
    spec_file = zoo.spec_path(config.model)
    size = config.input_size or spec.input.size
    check_input_size(spec, size, "--input_size")
    check_activation_memory(spec, size, config.batch_size)
    check_rgb_spec(spec)
    classes = config.classes or spec.head.classes
    weights = checked_weights_file(spec, config.weights, classes)
    data.validate(config.dataset, config.data_dir, config.on_bad_image)
    data.check_eval_split(config.dataset, "QAT reports the float and int8 accuracy on it")
    known = data.known_classes(config.dataset)
    if known is not None and known != classes:
        raise ConfigError(f"--dataset={config.dataset} has {known} classes, the model {classes}; pass "
                          f"--classes={known} with weights trained on {known} classes (e.g. by recipes.train)")
    if not config.epochs and config.steps_per_epoch is not None:
        raise ConfigError(f"--steps_per_epoch={config.steps_per_epoch} with --epochs=0: there is no fine-tuning to "
                          "take steps; drop --steps_per_epoch or pass --epochs")
    if config.epochs and config.lr <= 0:
        raise ConfigError(f"--lr={config.lr}: must be positive")
    check_out_dir(config.out_dir, own=REPORT, files=(WEIGHTS,) + (() if config.output else (DEFAULT_OUTPUT,)))
    output = config.output or os.path.join(config.out_dir, DEFAULT_OUTPUT)
    if not output.endswith(".tflite"):
        raise ConfigError(f"--output={output}: must end with .tflite")
    check_writable(output, "--output", model=spec_file, weights=weights)
    for name in (REPORT, WEIGHTS):
        check_writable(os.path.join(config.out_dir, name), "--out_dir", marker_ok=True, model=spec_file,
                       weights=weights)
    return QatPlan(spec=spec, spec_file=spec_file, size=size, classes=classes, weights=weights, output=output)


def _arrays(ds):
    import numpy as np
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _top1(logits, labels) -> float:
    return float((logits.argmax(-1) == labels).mean())


def run(config: QatConfig) -> QatResult:
    """Validates ``config`` (before TensorFlow is imported); twin, quantize, calibrate, fine-tune, convert, check."""
    plan = validate(config)
    started = time.time()

    import keras
    import numpy as np
    import tf_keras

    from common.io import atomic_write, eprint, keras_verbose, write_json
    from export import litert
    from inputs.classification import load
    from models.weights import sha256, write_npz
    from search import tflite_timing
    from training import qat as Q

    keras.utils.set_random_seed(config.seed)
    tf_keras.utils.set_random_seed(config.seed)
    common = dict(image_size=plan.size, batch_size=config.batch_size, data_dir=config.data_dir,
                  on_bad_image=config.on_bad_image)
    train_ds, info = load(config.dataset, "train", training=True, seed=config.seed, augment=config.augment,
                          repeat=True, limit=config.limit, **common)
    if info.num_classes != plan.classes:
        raise ConfigError(f"--dataset={config.dataset} has {info.num_classes} classes, the model {plan.classes}; "
                          f"pass --classes={info.num_classes} with weights trained on {info.num_classes} classes")
    val_ds, val_info = load(config.dataset, "test", training=False, limit=config.val_limit, **common)
    val_x, val_y = _arrays(val_ds)
    steps = config.steps_per_epoch or max(1, info.num_examples // config.batch_size)

    # 1–2. Keras 3 model, tf_keras twin, parity.
    model, twin = Q.build_pair(plan.spec, plan.size, plan.classes, plan.weights, config.preprocessing)
    check = val_x[:TWIN_CHECK_EXAMPLES]
    twin_diff, twin_scale = Q.max_abs_diff(model, twin, check)
    if twin_diff > TWIN_WARN * max(1.0, twin_scale):
        eprint(f"warning: tf_keras twin differs from the Keras 3 model by max|Δ| {twin_diff:.3g} "
               f"(largest logit {twin_scale:.3g})")
    float_logits = model.predict(val_x, batch_size=config.batch_size, verbose=0)
    del model

    # 3. Quantize, calibrate.
    try:
        qat, configs = Q.quantize(twin)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--model={config.model}: tfmot cannot quantize it: "
                          f"{(str(e).strip().splitlines() or [''])[0][:300]}") from None
    Q.init_weight_ranges(qat)
    calib = 0
    if config.calibration_batches:
        calib_ds, _ = load(config.dataset, "train", training=False, limit=config.limit, **common)
        calib = Q.calibrate(qat, twin, (x for x, _ in calib_ds.take(config.calibration_batches).as_numpy_iterator()))

    # 4. Fine-tune.
    if config.optimizer == "adam":
        optimizer = tf_keras.optimizers.Adam(config.lr)
    else:
        optimizer = tf_keras.optimizers.SGD(config.lr, momentum=0.9)
    qat.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="top1")])
    qat_before = _top1(qat.predict(val_x, batch_size=config.batch_size, verbose=0), val_y)
    history = []
    if config.epochs:
        hist = qat.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps, validation_data=val_ds,
                       verbose=keras_verbose(config.progress))
        keys = list(hist.history)
        history = [{"epoch": e, **{k: float(hist.history[k][e]) for k in keys}} for e in range(config.epochs)]
    qat_logits = qat.predict(val_x, batch_size=config.batch_size, verbose=0)

    # 5. Convert; 6. run the int8 file.
    flatbuffer = Q.convert(qat, config.int8_io)
    atomic_write(plan.output, lambda f: f.write(flatbuffer))
    int8_logits, floats, io = Q.tflite_logits(plan.output, val_x, progress=config.progress)
    ops = litert.op_counts(plan.output)

    weights = Q.float_weights(qat, twin)
    if config.preprocessing == "fold":  # back to the zoo form (with the preprocess layer) that every recipe loads
        from export.fold import unfold_weights
        weights = unfold_weights(plan.spec, weights)
    weights_path = os.path.join(config.out_dir, WEIGHTS)
    write_npz(weights_path, weights, "the fine-tuned weights", f"the fine-tuning diverged; lower --lr "
              f"(it is {config.lr:g})")

    report = {
        "model": plan.spec.name, "spec": os.path.abspath(plan.spec_file), "weights": config.weights or None,
        "weights_file": plan.weights, "input_size": plan.size, "classes": plan.classes,
        "dataset": config.dataset, "class_names": list(info.class_names),
        "twin_check": {"examples": int(len(check)), "max_abs_diff": twin_diff, "max_abs_logit": twin_scale},
        "twin_max_abs_diff": twin_diff,
        "quantize_configs": configs,
        "calibrated_ranges": calib,
        "float_top1": _top1(float_logits, val_y),
        "qat_top1_before_finetune": qat_before,
        "qat_top1": _top1(qat_logits, val_y),
        "int8_top1": _top1(int8_logits, val_y),
        "int8_vs_qat": {"top1_agreement": float((int8_logits.argmax(-1) == qat_logits.argmax(-1)).mean()),
                        "max_abs_diff": float(np.abs(int8_logits - qat_logits).max()),
                        "max_abs_qat_logit": float(np.abs(qat_logits).max())},
        "val_examples": int(len(val_y)), "train_examples": info.num_examples,
        "tflite": os.path.abspath(plan.output), "file_bytes": len(flatbuffer), "int8_io": config.int8_io,
        "preprocessing": config.preprocessing,
        "ops": sorted(ops), "op_counts": ops, "float_ops": floats,
        "input_dtype": io["input"]["dtype"], "output_dtype": io["output"]["dtype"], "io": io,
        "weights_out": os.path.abspath(weights_path), "weights_sha256": sha256(weights_path),
        "epochs": config.epochs, "steps_per_epoch": steps, "steps": config.epochs * steps, "history": history,
        "settings": {k: getattr(config, k) for k in SETTINGS},
        "versions": {**tflite_timing.versions(*VERSIONS), "python": sys.version.split()[0]},
        "wall_time_s": round(time.time() - started, 2),
        "produced_by": config.produced_by,
    }
    report_path = os.path.join(config.out_dir, REPORT)
    write_json(report_path, report)
    return QatResult(report, plan.output, weights_path, report_path)
