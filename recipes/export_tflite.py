"""Export a zoo model to TFLite (float32, float16, dynamic-range or full-integer int8) and check it with LiteRT.

    python -m recipes.export_tflite --model=efficientnet_lite0 --mode=int8            # ImageNet weights, int8
    python -m recipes.export_tflite --model=runs/search/derived.json --weights=runs/train/best.npz \\
        --classes=10 --dataset=folder:../shared/data/cifar10_subset --mode=float16 --output=m16.tflite

The conversion is Keras 3's ``model.export(format="litert", …)`` with converter options per mode (see
`export.litert`); only builtin TFLite ops are allowed. ``int8`` is full-integer quantization calibrated on
``--representative_steps`` images of ``--dataset`` (split ``--representative_split``); its input and output stay
float32 (QUANTIZE/DEQUANTIZE at the edges) unless ``--int8_io`` asks for int8 tensors (then feed
``round(x / scale + zero_point)`` of the raw 0–255 image, with the input's quantization from the report).

After the export the file runs in the ``ai_edge_litert`` interpreter on ``--check_examples`` images of
``--check_split`` and is compared with the Keras model: max|Δ| of the logits (all modes, plus max|Δ| relative to the
largest Keras logit) and top-1 agreement. Writes the ``.tflite`` and its report ``<output>.json`` (mode, bytes, ops,
input/output dtypes and quantization, parity, versions), both atomically, and prints a summary.
"""
from __future__ import annotations

import json
import os
import time

from absl import flags

from recipes._cli import UsageError, print_rows, run

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name or path of a spec .json.")
flags.DEFINE_string("weights", "imagenet", "Zoo weights tag (e.g. 'imagenet'), a .npz path (e.g. from a training "
                                           "recipe), or '' for random init.")
flags.DEFINE_enum("mode", "float32", ["float32", "float16", "dynamic", "int8"],
                  "Conversion: 'float32'; 'float16' (float16 weights); 'dynamic' (dynamic-range: int8 weights, "
                  "float activations); 'int8' (full-integer, calibrated on --dataset).")
flags.DEFINE_bool("int8_io", False, "With --mode=int8: int8 input and output tensors instead of float32 "
                                    "(the report gives their scale and zero point).")
flags.DEFINE_string("dataset", "shapes", "Data for int8 calibration and the parity check: 'shapes' (built-in "
                                         "synthetic), 'folder:PATH' or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
flags.DEFINE_string("representative_split", "train", "Split of --dataset that calibrates int8 quantization.")
flags.DEFINE_integer("representative_steps", 100, "Calibration images (batch 1) for --mode=int8.", lower_bound=1)
flags.DEFINE_string("check_split", "test", "Split of --dataset for the LiteRT-vs-Keras check.")
flags.DEFINE_integer("check_examples", 100, "Images of --check_split compared between LiteRT and Keras (0: no check).",
                     lower_bound=0)
flags.DEFINE_integer("input_size", None, "Square input size of the exported model (default: the spec's).",
                     lower_bound=8)
flags.DEFINE_integer("classes", None, "Classifier width (default: the spec's); set it when the weights were trained "
                                      "on another class count.", lower_bound=1)
flags.DEFINE_string("output", None, "Path of the .tflite (default: OUT_DIR/<model>-<mode>.tflite, '-int8_io' with "
                                    "--int8_io); the report goes to <output>.json.")
flags.DEFINE_string("out_dir", "runs/export", "Directory of the default --output.")
flags.mark_flag_as_required("model")

_MODE_TEXT = {"float32": "float32", "float16": "float16 weights", "dynamic": "dynamic-range (int8 weights)",
              "int8": "full-integer int8"}


def _weights(spec, value: str, classes: int) -> str | None:
    """The weights file to load (verified; its classifier width checked against ``classes``), or None."""
    import numpy as np

    import zoo
    if not value:
        return None
    if value.endswith(".npz"):
        if not os.path.isfile(value):
            raise UsageError(f"--weights {value}: no such file")
        path = value
    else:
        path = zoo.weights_path(spec.name, value)
    try:  # an .npz reads lazily: only the classifier kernel is loaded here
        with np.load(path, allow_pickle=False) as f:
            shape = f["classifier/kernel"].shape if "classifier/kernel" in f.files else None
    except (OSError, ValueError) as e:
        raise UsageError(f"--weights {value}: not a readable weights file ({e})") from None
    if shape is not None and shape[-1] != classes:
        raise UsageError(f"--weights {value}: its classifier has {shape[-1]} classes, the model {classes}; "
                         f"pass --classes={shape[-1]}")
    return path


def _arrays(dataset, split, size, limit, flag):
    """(images float32 0–255, labels int32, DataInfo) of the first ``limit`` examples of a split."""
    import numpy as np

    from inputs import classification as data
    try:
        ds, info = data.load(dataset, split, image_size=size, batch_size=32, training=False,
                             data_dir=FLAGS.data_dir, limit=limit)
        batches = list(ds.as_numpy_iterator())
    except data.DataError as e:
        raise UsageError(f"{flag}: {e}") from None
    if not batches:
        raise UsageError(f"{flag}: {dataset} split {split!r} is empty")
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), info


def main(argv):
    import zoo
    from export import litert
    from inputs import classification as data
    from models.counting import count
    from search import tflite_timing
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Everything the user gave is checked before TensorFlow is imported.
    spec = zoo.get_spec(FLAGS.model)
    size = FLAGS.input_size or spec.input.size
    classes = FLAGS.classes or spec.head.classes
    cost = count(spec, size, classes=classes)  # SpecError if the input size does not fit the network
    weights = _weights(spec, FLAGS.weights, classes)
    data.validate(FLAGS.dataset, FLAGS.data_dir)
    mode = FLAGS.mode
    if FLAGS.int8_io and mode != "int8":
        raise UsageError(f"--int8_io needs --mode=int8 (got --mode={mode})")
    output = FLAGS.output or os.path.join(FLAGS.out_dir, f"{spec.name}-{mode}{'_io' if FLAGS.int8_io else ''}.tflite")
    if not output.endswith(".tflite"):
        raise UsageError(f"--output {output}: must end with .tflite")
    report_path = output + ".json"
    litert.check_writable(output, "--output")
    litert.check_writable(report_path, "--output")

    import numpy as np

    from models.builder import build
    t0 = time.perf_counter()
    model = build(spec, weights=weights, input_size=size, classes=classes)

    representative = None
    if mode == "int8":
        calib, _, _ = _arrays(FLAGS.dataset, FLAGS.representative_split, size, FLAGS.representative_steps,
                              "--representative_split")

        def representative():
            for x in calib:
                yield [x[None]]
    check = None
    if FLAGS.check_examples:
        check = _arrays(FLAGS.dataset, FLAGS.check_split, size, FLAGS.check_examples, "--check_split")

    nbytes = litert.export(model, output, mode, representative, FLAGS.int8_io)
    export_s = time.perf_counter() - t0
    ops = litert.op_counts(output)
    it = litert.interpreter(output)
    io = litert.io_details(it)

    parity = None
    if check is not None:
        images, labels, info = check
        ref = model.predict(images, batch_size=32, verbose=0)
        got = litert.predict(it, images)
        diff = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max())
        parity = {"dataset": FLAGS.dataset, "split": FLAGS.check_split, "examples": int(len(images)),
                  "max_abs_diff": diff, "max_abs_keras_logit": scale,
                  "relative_max_abs_diff": diff / scale if scale > 0 else None,
                  "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
                  "accuracy": None}
        if info.num_classes == classes:  # labels are comparable with the classifier's outputs
            parity["accuracy"] = {"keras": float((ref.argmax(-1) == labels).mean()),
                                  "litert": float((got.argmax(-1) == labels).mean())}

    report = {
        "model": spec.name, "spec": zoo.spec_path(FLAGS.model), "weights": FLAGS.weights or None,
        "weights_file": weights, "input_size": size,
        "classes": classes, "params": cost.params, "macs": cost.macs,
        "mode": mode, "int8_io": FLAGS.int8_io, "tflite": output, "file_bytes": nbytes,
        "ops": sorted(ops), "op_counts": ops,
        "input_dtype": io["input"]["dtype"], "output_dtype": io["output"]["dtype"], "io": io,
        "representative": ({"dataset": FLAGS.dataset, "split": FLAGS.representative_split,
                            "steps": FLAGS.representative_steps} if mode == "int8" else None),
        "parity": parity, "export_seconds": round(export_s, 2), "versions": tflite_timing.versions(
            "keras", "tensorflow", "ai-edge-litert"),
    }
    from common.io import atomic_write
    atomic_write(report_path, lambda f: f.write(json.dumps(report, indent=1).encode()))

    kind = _MODE_TEXT[mode]
    if mode == "int8":
        kind += ", int8 input/output" if FLAGS.int8_io else ", float32 input/output"
    rows = [("model", f"{spec.name} at {size}×{size}, {classes} classes, weights: {FLAGS.weights or 'random init'}"),
            ("mode", kind),
            ("file", f"{output} ({nbytes / 1e3:,.1f} kB, {export_s:.0f}s)"),
            ("input / output", f"{io['input']['dtype']} {io['input']['shape']} / "
                               f"{io['output']['dtype']} {io['output']['shape']}"),
            ("ops", ", ".join(f"{k}×{v}" for k, v in ops.items()))]
    if parity:
        rows.append((f"LiteRT vs Keras ({parity['examples']} ex.)",
                     f"max|Δ| {parity['max_abs_diff']:.2e} (relative {parity['relative_max_abs_diff'] or 0:.2e}), "
                     f"top-1 agreement {parity['top1_agreement']:.3f}"))
        if parity["accuracy"]:
            rows.append(("top-1 accuracy", f"Keras {parity['accuracy']['keras']:.3f}, "
                                           f"LiteRT {parity['accuracy']['litert']:.3f}"))
    print_rows(rows)
    print(f"wrote {output} and {report_path}")
    return 0


if __name__ == "__main__":
    run(main)
