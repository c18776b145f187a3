"""Quantization-aware training (tensorflow-model-optimization) of a zoo spec and export to int8 TFLite.

    python -m recipes.qat --model=runs/search/derived.json --weights=runs/train/weights.npz --classes=10 \\
        --dataset=folder:../shared/data/cifar10_subset --epochs=2 --out_dir=runs/qat
    python -m recipes.qat --model=efficientnet_lite0 --weights=imagenet --dataset=imagenet2012 --epochs=1 \\
        --steps_per_epoch=2000 --lr=1e-5
    python -m recipes.qat --flagfile=my_qat.flags                                # absl flagfile

tfmot 0.8.1 does not accept Keras 3 models (DESIGN.md §2), so the recipe works on the **tf_keras twin** of the spec:

1. decode the spec, build the Keras 3 model and load ``--weights`` (zoo tag or ``.npz`` keyed ``layer/variable``);
2. build the twin with ``models.builder.build(spec, keras_module=tf_keras)``, copy the weights by layer name and
   check the two on a batch of validation images (max|Δ| of the logits, reported; a few 1e-6 at most here);
3. annotate every layer (below), ``quantize_apply`` (default 8-bit scheme: per-channel symmetric int8 weights,
   asymmetric int8 activations), and start the activation ranges from a float calibration pass
   (``--calibration_batches``; tfmot would otherwise start every range at [-6, 6] and move it by an EMA of decay
   0.999 per step, far too slowly for a short fine-tune);
4. fine-tune with ``fit`` on the ``inputs.classification`` tf.data pipeline (tf_keras SGD or Adam, constant small ``--lr``,
   sparse cross-entropy on logits), then measure the fake-quantized ("float-sim") top-1 on the validation split;
5. convert with ``tf.lite.TFLiteConverter.from_keras_model`` + ``optimizations=[Optimize.DEFAULT]``: int8 weights and
   activations from the learned ranges, float32 input/output (QUANTIZE/DEQUANTIZE at the edges) unless
   ``--int8_io``; only builtin TFLite ops;
6. run the file in the ``ai_edge_litert`` interpreter on the validation split: int8 top-1, top-1 agreement and
   max|Δ| of the logits against the QAT model.

Writes ``--output`` (default ``OUT_DIR/model_int8_qat.tflite``), ``OUT_DIR/weights.npz`` (the fine-tuned float
weights in the zoo format, loadable by every other recipe with ``--weights``) and ``OUT_DIR/qat_report.json`` (twin
max|Δ|, float / QAT / int8 top-1, file bytes, ops, the ops left in float, the layers that got an explicit
quantize config, epochs, steps, settings, versions), all atomically. Bad input: one line on stderr, exit status 2,
nothing written.

Which layers quantize
---------------------
tfmot's default 8-bit registry covers Conv2D (grouped too), DepthwiseConv2D, Dense, BatchNormalization after a
conv (folded by its transforms), ReLU (also ReLU(6) and ReLU(max_value=1)), Activation (relu, relu6, swish,
sigmoid), Add, Concatenate, GlobalAveragePooling2D (also ``keepdims=True``), and passes ZeroPadding2D, Reshape,
Cropping2D, MaxPooling2D and Dropout through. It refuses two layer types the builder uses; ``quantize_model``
fails on every zoo model because of the first: ``RuntimeError: Layer preprocess:<… Rescaling> is not supported``.
The recipe therefore annotates the model layer by layer (``quantize_annotate_layer``) and gives refused layers a
``QuantizeConfig`` under ``quantize_scope``:

- ``Rescaling`` (the ``preprocess`` input layer and hswish's ``x/6 + 1/2``) and ``Multiply`` (SE's scale, hswish's
  product) get `OutputQuantizeConfig`: no weights or inputs quantized, an int8 range recorded for the output. The
  pure no-op alternative (`NoOpQuantizeConfig`, output left unquantized) was measured worse: the layer after it (the
  stem conv after ``preprocess``, the projection conv after SE) then has no input range and the converter leaves
  it in float.
- any other refused layer type would get `NoOpQuantizeConfig` (stays float in the file); no zoo model has one.

The report lists the layers of each kind (``quantize_configs``) and the ops that remain float in the file
(``float_ops``). The ``preprocess`` Rescaling always stays float (MUL + ADD with a per-channel constant, before the
QUANTIZE; the converter cannot quantize a constant operand that carries no fake-quant range); with float32 input
this is where the input would be quantized anyway.

Checked on this machine (tfmot 0.8.1, TF 2.21, ai-edge-litert 2.3.0; ``quantize_apply`` with these configs, then
conversion; tiny specs at 32×32, zoo models at 64×64 with random init). Plain ``quantize_model`` fails on every row
(the ``preprocess`` Rescaling). "int8 but preprocess" means the only float ops in the file are the input Rescaling's
MUL + ADD:

=============================  ====  ==========================================================================
block / model                  ok?   TFLite result; layers that needed an explicit config
=============================  ====  ==========================================================================
MBConv, one kernel, relu6      yes   int8 but preprocess
MBConv, mixed kernels, relu6   yes   int8 but preprocess; branch form of DESIGN.md §3, CONCATENATION int8
grouped 1×1 convs              yes   int8 but preprocess (CONV_2D)
swish (Activation)             yes   int8 but preprocess (LOGISTIC + MUL)
SE (GAP keepdims, 1×1, ×)      yes   int8 but preprocess (MEAN, LOGISTIC, MUL); each ``*_se_scale`` Multiply
                                     gets OutputQuantizeConfig (with NoOp the projection conv after it went float)
hswish (Rescaling, ReLU, ×)    yes   the Multiply is int8 (OutputQuantizeConfig); the gate's MUL, ADD, RELU,
                                     MINIMUM stay float with QUANTIZE/DEQUANTIZE around them (no zoo spec uses it)
ShuffleNetV2 split/concat      yes   Reshape/Cropping2D pass through: RESHAPE, STRIDED_SLICE (+ SHAPE, PACK:
                                     tf_keras reshapes with a dynamic batch), int8
efficientnet_lite0             yes   int8 but preprocess; 5.0 MB
mobilenet_v2_100               yes   int8 but preprocess; 3.9 MB
mixnet_s                       yes   int8 but preprocess; 4.7 MB; 13 SE Multiply layers configured
mixnet_m                       yes   int8 but preprocess; 5.8 MB; 16 SE Multiply layers configured
mnasnet_a1                     yes   int8 but preprocess; 4.4 MB; 8 SE Multiply layers configured
spos_shufflenetv2              yes   int8 but preprocess; 4.0 MB
=============================  ====  ==========================================================================

(Sizes at 1000 classes. Annotation + conversion takes about 1–6 minutes per zoo model on 2 CPU cores.) A
quantized-then-calibrated model starts at the float accuracy: a shapes-trained derived spec (swish, SE, mixed
kernels) scored float 0.422 / QAT before fine-tuning 0.420 / int8 TFLite 0.418 top-1 on 500 test images with
``--epochs=0``; without the range initialisation (``--calibration_batches=0``, weight ranges still set) 0.100.

QAT ranges are per tensor; BatchNormalization stays a separate layer during QAT (the converter folds it).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import flags

from recipes._cli import UsageError, print_rows, run
from training.qat import (
    build_pair,
    calibrate,
    convert,
    float_weights,
    init_weight_ranges,
    max_abs_diff,
    quantize,
    tflite_logits,
)

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (python -m zoo list) or path of a spec .json (e.g. a search's "
                                   "derived.json).")
flags.DEFINE_string("weights", "", "Weights to start from: a zoo tag such as 'imagenet', a .npz path keyed "
                                   "'layer/variable' (e.g. the weights.npz of recipes.train), or '' for random init.")
flags.DEFINE_integer("classes", None, "Classifier width (default: the spec's); set it when --weights were trained on "
                                      "another class count. Must equal the dataset's class count.", lower_bound=2)
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images, PATH/train and PATH/test) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_integer("input_size", None, "Square input size (default: the spec's input size).", lower_bound=8)
flags.DEFINE_integer("epochs", 1, "QAT fine-tuning epochs (0: quantize, calibrate and convert without training).",
                     lower_bound=0)
flags.DEFINE_integer("steps_per_epoch", None, "Optimizer steps per epoch (default: training examples // batch size).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Batch size of fine-tuning, calibration and evaluation.", lower_bound=1)
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "tf_keras optimizer: Adam, or SGD with momentum 0.9.")
flags.DEFINE_float("lr", 1e-4, "Learning rate (constant; QAT fine-tunes, so keep it small).", lower_bound=0.0)
flags.DEFINE_enum("augment", "standard", ["standard", "paper", "none"], "Training augmentation (inputs.classification): "
                                                                          "'standard', 'paper' or 'none'.")
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=1)
flags.DEFINE_integer("val_limit", 1000, "Evaluate on the first N examples of the test split (float, QAT and int8 "
                                        "TFLite top-1).", lower_bound=1)
flags.DEFINE_integer("calibration_batches", 10, "Training batches (no augmentation) whose float activation ranges "
                                                "start the QAT ranges; 0: tfmot's initial [-6, 6].", lower_bound=0)
flags.DEFINE_bool("int8_io", False, "int8 input and output tensors in the .tflite instead of float32 (feed "
                                    "round(x / scale + zero_point) of the raw 0–255 image; see the report's io).")
flags.DEFINE_string("out_dir", "runs/qat", "Directory of qat_report.json, weights.npz and the default --output.")
flags.DEFINE_string("output", None, "Path of the int8 .tflite (default: OUT_DIR/model_int8_qat.tflite).")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, data order and augmentation.")
flags.DEFINE_bool("progress", True, "Keras progress bar per epoch (verbose=1; otherwise one line per epoch).")
flags.mark_flag_as_required("model")

REPORT = "qat_report.json"
WEIGHTS = "weights.npz"
DEFAULT_OUTPUT = "model_int8_qat.tflite"
TWIN_CHECK_EXAMPLES = 32
TWIN_WARN = 1e-4  # relative max|Δ| above which the twin is reported as suspicious
# Layer types tfmot's default registry refuses that get an output range (no weights or inputs quantized); any other
# refused type gets the no-op config.
VERSIONS = ("tensorflow", "tf-keras", "keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy")


# ---------------------------------------------------------------------------------------------------------------
# Command line


class _Plan:
    """What the flags resolve to before TensorFlow is imported."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _weights_file(spec, value: str, classes: int) -> str | None:
    """The ``.npz`` named by ``--weights`` (zoo tags verified by sha256), its classifier width checked."""
    import numpy as np

    import zoo
    if not value:
        return None
    if value.endswith(".npz") or os.sep in value:
        if not os.path.isfile(value):
            raise UsageError(f"--weights={value}: no such file")
        path = value
    else:
        path = zoo.weights_path(spec.name, value)
    try:  # lazily: only the classifier kernel is read here; every name and shape is checked at load
        with np.load(path, allow_pickle=False) as f:
            if not f.files or any("/" not in k for k in f.files):
                raise UsageError(f"--weights={value}: not a weights file of this zoo (keys 'layer/variable')")
            shape = f["classifier/kernel"].shape if "classifier/kernel" in f.files else None
    except (OSError, ValueError) as e:
        raise UsageError(f"--weights={value}: not a readable weights file ({e})") from None
    if shape is not None and shape[-1] != classes:
        raise UsageError(f"--weights={value}: its classifier has {shape[-1]} classes, the model {classes}; "
                         f"pass --classes={shape[-1]}")
    return path


def _check_flags() -> _Plan:
    """Everything checkable without TensorFlow."""
    import zoo
    from export import litert
    from inputs import classification as data
    from models.spec import check_input_size

    spec = zoo.get_spec(FLAGS.model)
    spec_file = zoo.spec_path(FLAGS.model)
    size = FLAGS.input_size or spec.input.size
    check_input_size(spec, size, "--input_size")
    classes = FLAGS.classes or spec.head.classes
    weights = _weights_file(spec, FLAGS.weights, classes)
    data.validate(FLAGS.dataset, FLAGS.data_dir)
    known = None
    if FLAGS.dataset == "shapes":
        known = len(data.SHAPES_CLASSES)
    elif FLAGS.dataset.startswith("folder:"):
        root = data._folder_root(FLAGS.dataset)  # noqa: SLF001 — validated above; the same helpers recipes.train uses
        layout = data._folder_layout(root)  # noqa: SLF001
        if "test" not in layout:
            raise UsageError(f"--dataset={FLAGS.dataset}: no test split (needs {root}/train and {root}/test or val) "
                             "for the QAT and int8 accuracy")
        known = len(data._class_names(layout["train"]))  # noqa: SLF001
    if known is not None and known != classes:
        raise UsageError(f"--dataset={FLAGS.dataset} has {known} classes, the model {classes}; pass "
                         f"--classes={known} with weights trained on {known} classes (e.g. by recipes.train)")
    if FLAGS.epochs and FLAGS.lr <= 0:
        raise UsageError(f"--lr={FLAGS.lr}: must be positive")
    if os.path.exists(FLAGS.out_dir) and not os.path.isdir(FLAGS.out_dir):
        raise UsageError(f"--out_dir={FLAGS.out_dir}: exists and is not a directory")
    output = FLAGS.output or os.path.join(FLAGS.out_dir, DEFAULT_OUTPUT)
    if not output.endswith(".tflite"):
        raise UsageError(f"--output={output}: must end with .tflite")
    litert.check_writable(output, "--output")
    for name in (REPORT, WEIGHTS):
        litert.check_writable(os.path.join(FLAGS.out_dir, name), "--out_dir")
    return _Plan(spec=spec, spec_file=spec_file, size=size, classes=classes, weights=weights, output=output)


def _arrays(ds):
    import numpy as np
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _top1(logits, labels) -> float:
    return float((logits.argmax(-1) == labels).mean())


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    plan = _check_flags()
    started = time.time()

    import keras
    import numpy as np
    import tf_keras

    from common.io import atomic_write
    from export import litert
    from inputs.classification import load
    from search import tflite_timing

    keras.utils.set_random_seed(FLAGS.seed)
    tf_keras.utils.set_random_seed(FLAGS.seed)
    common = dict(image_size=plan.size, batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir)
    train_ds, info = load(FLAGS.dataset, "train", training=True, seed=FLAGS.seed, augment=FLAGS.augment,
                          repeat=True, limit=FLAGS.limit, **common)
    if info.num_classes != plan.classes:
        raise UsageError(f"--dataset={FLAGS.dataset} has {info.num_classes} classes, the model {plan.classes}; "
                         f"pass --classes={info.num_classes} with weights trained on {info.num_classes} classes")
    val_ds, val_info = load(FLAGS.dataset, "test", training=False, limit=FLAGS.val_limit, **common)
    val_x, val_y = _arrays(val_ds)
    steps = FLAGS.steps_per_epoch or max(1, info.num_examples // FLAGS.batch_size)

    # 1–2. Keras 3 model, tf_keras twin, parity.
    model, twin = build_pair(plan.spec, plan.size, plan.classes, plan.weights)
    check = val_x[:TWIN_CHECK_EXAMPLES]
    twin_diff, twin_scale = max_abs_diff(model, twin, check)
    if twin_diff > TWIN_WARN * max(1.0, twin_scale):
        print(f"warning: tf_keras twin differs from the Keras 3 model by max|Δ| {twin_diff:.3g} "
              f"(largest logit {twin_scale:.3g})", file=sys.stderr)
    float_logits = model.predict(val_x, batch_size=FLAGS.batch_size, verbose=0)
    del model

    # 3. Quantize, calibrate.
    try:
        qat, configs = quantize(twin)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--model={FLAGS.model}: tfmot cannot quantize it: "
                         f"{(str(e).strip().splitlines() or [''])[0][:300]}") from None
    init_weight_ranges(qat)
    calib = 0
    if FLAGS.calibration_batches:
        calib_ds, _ = load(FLAGS.dataset, "train", training=False, limit=FLAGS.limit, **common)
        calib = calibrate(qat, twin, (x for x, _ in calib_ds.take(FLAGS.calibration_batches).as_numpy_iterator()))

    # 4. Fine-tune.
    if FLAGS.optimizer == "adam":
        optimizer = tf_keras.optimizers.Adam(FLAGS.lr)
    else:
        optimizer = tf_keras.optimizers.SGD(FLAGS.lr, momentum=0.9)
    qat.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="top1")])
    qat_before = _top1(qat.predict(val_x, batch_size=FLAGS.batch_size, verbose=0), val_y)
    history = []
    if FLAGS.epochs:
        hist = qat.fit(train_ds, epochs=FLAGS.epochs, steps_per_epoch=steps, validation_data=val_ds,
                       verbose=1 if FLAGS.progress else 2)
        keys = list(hist.history)
        history = [{"epoch": e, **{k: float(hist.history[k][e]) for k in keys}} for e in range(FLAGS.epochs)]
    qat_logits = qat.predict(val_x, batch_size=FLAGS.batch_size, verbose=0)

    # 5. Convert; 6. run the int8 file.
    flatbuffer = convert(qat, FLAGS.int8_io)
    atomic_write(plan.output, lambda f: f.write(flatbuffer))
    int8_logits, floats, io = tflite_logits(plan.output, val_x, progress=FLAGS.progress)
    ops = litert.op_counts(plan.output)

    weights = float_weights(qat, twin)
    from models.weights import sha256
    weights_path = os.path.join(FLAGS.out_dir, WEIGHTS)
    atomic_write(weights_path, lambda f: np.savez(f, **weights))

    report = {
        "model": plan.spec.name, "spec": os.path.abspath(plan.spec_file), "weights": FLAGS.weights or None,
        "weights_file": plan.weights, "input_size": plan.size, "classes": plan.classes,
        "dataset": FLAGS.dataset, "class_names": list(info.class_names),
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
        "tflite": os.path.abspath(plan.output), "file_bytes": len(flatbuffer), "int8_io": FLAGS.int8_io,
        "ops": sorted(ops), "op_counts": ops, "float_ops": floats,
        "input_dtype": io["input"]["dtype"], "output_dtype": io["output"]["dtype"], "io": io,
        "weights_out": os.path.abspath(weights_path), "weights_sha256": sha256(weights_path),
        "epochs": FLAGS.epochs, "steps_per_epoch": steps, "steps": FLAGS.epochs * steps, "history": history,
        "settings": {k: getattr(FLAGS, k) for k in (
            "model", "weights", "classes", "dataset", "input_size", "epochs", "steps_per_epoch", "batch_size",
            "optimizer", "lr", "augment", "limit", "val_limit", "calibration_batches", "int8_io", "seed")},
        "versions": {**tflite_timing.versions(*VERSIONS), "python": sys.version.split()[0]},
        "wall_time_s": round(time.time() - started, 2),
        "produced_by": "python -m recipes.qat " + " ".join(sys.argv[1:]),
    }
    report_path = os.path.join(FLAGS.out_dir, REPORT)
    text = json.dumps(report, indent=1) + "\n"
    atomic_write(report_path, lambda f: f.write(text.encode()))

    rows = [("model", f"{plan.spec.name} at {plan.size}×{plan.size}, {plan.classes} classes, weights: "
                      f"{FLAGS.weights or 'random init'}"),
            ("tf_keras twin", f"max|Δ| {twin_diff:.2e} vs Keras 3 on {len(check)} images"),
            ("quantize configs", f"output-only: {len(configs['output_only'])} layers, no-op: {len(configs['noop'])}"),
            (f"top-1 ({len(val_y)} val)", f"float {report['float_top1']:.4f}, QAT before fine-tune "
                                          f"{qat_before:.4f}, QAT {report['qat_top1']:.4f}, "
                                          f"int8 TFLite {report['int8_top1']:.4f}"),
            ("int8 vs QAT", f"top-1 agreement {report['int8_vs_qat']['top1_agreement']:.4f}, logits max|Δ| "
                            f"{report['int8_vs_qat']['max_abs_diff']:.3g}"),
            ("file", f"{plan.output} ({len(flatbuffer) / 1e3:,.1f} kB, {io['input']['dtype']} in / "
                     f"{io['output']['dtype']} out)"),
            ("ops", ", ".join(f"{k}×{v}" for k, v in ops.items())),
            ("float ops", ", ".join(floats) or "none")]
    print_rows(rows)
    print(f"wrote {plan.output}, {weights_path} and {report_path}")
    return 0


if __name__ == "__main__":
    run(main)
