"""Export a zoo model to TFLite (float32, float16, dynamic-range or full-integer int8) and check it with LiteRT.

    python -m recipes.export_tflite --model=efficientnet_lite0 --mode=int8            # ImageNet weights, int8
    python -m recipes.export_tflite --model=runs/search/derived.json --weights=runs/train/weights.npz \\
        --dataset=folder:../shared/data/cifar10_subset --mode=float16 --output=m16.tflite

The conversion is the TFLite converter on the frozen model function with converter options per mode (what Keras 3's
``model.export(format="litert", …)`` converts, without its SavedModel round trip; see `export.litert`); only
builtin TFLite ops are allowed. ``mixed`` gives each block the precision its spec ``bits`` ask for (int8, int16×8
activations or float; sub-8-bit widths deploy at int8, which is the narrowest the runtime runs) in one file, spliced
from TFLite's int8, int16×8 and float conversions of the same graph (`export.mixed_precision`), calibrated like
``int8``. ``int8`` is full-integer quantization calibrated on
``--representative_steps`` images of ``--dataset`` (split ``--representative_split``); its input and output stay
float32 (QUANTIZE/DEQUANTIZE at the edges) unless ``--int8_io`` asks for int8 tensors (then feed
``round(x / scale + zero_point)`` of the raw 0–255 image, with the input's quantization from the report).

After the export the file runs in the ``ai_edge_litert`` interpreter on ``--check_examples`` images of
``--check_split`` and is compared with the Keras model: max|Δ| of the logits (all modes, plus max|Δ| relative to the
largest Keras logit) and top-1 agreement. Writes the ``.tflite`` and its report ``<output>.json`` (mode, bytes, ops,
input/output dtypes and quantization, parity, versions), both atomically, and prints a summary.

Input size, class count and labels come from the weights' model card (the zoo's, or the ``model_card.json`` a
training run wrote beside its ``.npz``) unless flags say otherwise. The file takes raw 0–255 RGB pixels: the spec's
mean/std are folded into the stem conv (``--preprocessing=fold``, `export.fold`), so no per-pixel normalisation op
runs before the network (an exact border costs a PAD for a model trained with the mean border;
``--preprocessing=fold_black`` drops it at a cost the parity check measures); ``--preprocessing=none`` makes a file
for callers who normalise themselves. The file
carries its labels, normalisation and provenance as flatbuffer metadata (``export.litert.read_metadata``).
"""
from __future__ import annotations

import dataclasses

from absl import flags

from recipes.cli import UsageError, define_on_bad_image, print_rows, run
from workflows import export_tflite
from workflows.export_tflite import MODE_TEXT, ExportConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name or path of a spec .json.")
flags.DEFINE_string("weights", "imagenet", "Zoo weights tag (e.g. 'imagenet'), a .npz path (e.g. from a training "
                                           "recipe), or '' for random init.")
flags.DEFINE_enum("mode", "float32", ["float32", "float16", "dynamic", "int8", "mixed"],
                  "Conversion: 'float32'; 'float16' (float16 weights); 'dynamic' (dynamic-range: int8 weights, "
                  "float activations); 'int8' (full-integer, calibrated on --dataset); 'mixed' (each block at the "
                  "precision of its spec 'bits' — w,a <= 8: int8; a <= 16: int16x8; wider: float — in one file, "
                  "calibrated on --dataset; export.mixed_precision).")
flags.DEFINE_enum("mixed_default", None, ["int8", "int16x8", "float"],
                  "With --mode=mixed (only): the precision of the stem, the head and blocks without bits "
                  "(default int8).")
flags.DEFINE_bool("int8_io", False, "With --mode=int8: int8 input and output tensors instead of float32 "
                                    "(the report gives their scale and zero point). With --preprocessing=fold and "
                                    "one integral mean/std for all channels (EfficientNet-Lite: 127/128), or a "
                                    "black border (input.border=black or --preprocessing=fold_black), the input's "
                                    "quantization is the normalisation: feed pixel - 128, no op added.")
flags.DEFINE_string("dataset", "shapes", "Data for int8 calibration and the parity check: 'shapes' (built-in "
                                         "synthetic), 'folder:PATH', 'tsv:PATH' (labels.tsv file list with a fixed "
                                         "300-image test split) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
flags.DEFINE_string("representative_split", "train", "Split of --dataset that calibrates int8 quantization.")
flags.DEFINE_integer("representative_steps", 100, "Calibration images (batch 1) for --mode=int8.", lower_bound=1)
flags.DEFINE_string("check_split", "test", "Split of --dataset for the LiteRT-vs-Keras check.")
flags.DEFINE_integer("check_examples", 100, "Images of --check_split compared between LiteRT and Keras (0: no check).",
                     lower_bound=0)
flags.DEFINE_integer("input_size", None, "Square input size of the exported model (default: the input size in the "
                                         "weights' model card, else the spec's).", lower_bound=8)
flags.DEFINE_integer("classes", None, "Classifier width (default: the weights' classifier, else the spec's).",
                     lower_bound=1)
flags.DEFINE_string("output", None, "Path of the .tflite (default: OUT_DIR/<model>-<weights>-<mode>.tflite, where "
                                    "<weights> is the zoo tag, 'random', or the .npz's folder_stem; '_io' with "
                                    "--int8_io); the report goes to <output>.json.")
flags.DEFINE_string("out_dir", "runs/export", "Directory of the default --output.")
flags.DEFINE_enum("preprocessing", "fold", ["fold", "fold_black", "layer", "none"],
                  "Input normalisation of the file: 'fold' (default: raw 0–255 pixels in; mean/std folded into the "
                  "stem conv and its BatchNorm, the border padded with the mean so it stays exact: no per-pixel MUL, "
                  "and no ADD when the mean is one value for all channels; no op at all for a spec trained with "
                  "input.border=black); 'fold_black' (the same, the border taken as raw black pixels: no op added "
                  "for any spec, keras.applications' speed; for a model trained with the mean border an "
                  "approximation at the image edge, whose cost the parity check reports); 'layer' (raw pixels "
                  "through the "
                  "preprocess layer, as the Keras model); 'none' (the file takes images normalised as "
                  "(pixel - mean) / std, like keras.applications' include_preprocessing=False).")
flags.mark_flag_as_required("model")


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = ExportConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(ExportConfig)})
    result = export_tflite.run(config)
    report, output, mode = result.report, result.output, config.mode
    io, ops, parity, size = report["io"], report["op_counts"], report["parity"], report["input_size"]
    kind = MODE_TEXT[mode]
    if mode == "int8":
        kind += ", int8 input/output" if config.int8_io else ", float32 input/output"
    rows = [("model", f"{report['model']} at {size}×{size}, {report['classes']} classes, weights: "
                      f"{config.weights or 'random init'}"),
            ("mode", kind),
            ("input", f"{report['metadata']['input']} (--preprocessing={config.preprocessing}); labels: "
                      f"{'from the model card' if report['metadata']['labels'] else 'none known'}"),
            *([("int8 calibration" if mode == "int8" else "calibration",
                f"{report['representative']['images']} images of {config.dataset} split "
                f"{config.representative_split!r}"
                                    + (" (synthetic: --dataset=<your data> calibrates on real images)"
                                       if report["representative"]["synthetic"] else ""))]
              if mode in ("int8", "mixed") else []),
            *([("precision per part", ", ".join(f"{k}: {v}" for k, v in report["mixed_precision"]["plan"].items())
                + f" ({report['mixed_precision']['inserted']['QUANTIZE']} QUANTIZE, "
                  f"{report['mixed_precision']['inserted']['DEQUANTIZE']} DEQUANTIZE inserted)")]
              if mode == "mixed" else []),
            ("file", f"{output} ({report['file_bytes'] / 1e3:,.1f} kB, {result.export_seconds:.0f}s)"),
            ("input / output", f"{io['input']['dtype']} {io['input']['shape']} / "
                               f"{io['output']['dtype']} {io['output']['shape']}"),
            ("ops", ", ".join(f"{k}×{v}" for k, v in ops.items()))]
    if parity:
        rows.append((f"LiteRT vs Keras ({parity['examples']} ex.)",
                     f"max|Δ| {parity['max_abs_diff']:.2e} (relative {parity['relative_max_abs_diff'] or 0:.2e}), "
                     f"top-1 agreement {parity['top1_agreement']:.3f}"))
        if parity.get("accuracy_note"):
            rows.append(("top-1 accuracy", parity["accuracy_note"]))
        if parity["accuracy"]:
            rows.append(("top-1 accuracy", f"Keras {parity['accuracy']['keras']:.3f}, "
                                           f"LiteRT {parity['accuracy']['litert']:.3f}"))
    print_rows(rows)
    print(f"wrote {output} and {result.report_path}")
    return 0


if __name__ == "__main__":
    run(main)
