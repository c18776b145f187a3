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
4. fine-tune with ``fit`` on the ``inputs.classification`` tf.data pipeline (tf_keras SGD or Adam, constant small
   ``--lr``, sparse cross-entropy on logits), then measure the fake-quantized ("float-sim") top-1 on the validation
   split;
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
(``float_ops``).

Input normalisation (``--preprocessing``)
----------------------------------------
``fold`` (default): the twin is the folded build of `export.fold` — no ``preprocess`` layer; ``W / std`` in the stem
conv and ``μ + Σ W·mean/std`` in its BatchNorm; the stem pads the raw image with the mean (``stem_border_pad``: one
``PADV2``, or ``PAD`` + ``ADD`` of a constant border for per-channel means) and convolves ``valid``, so it equals the
zoo model exactly, borders included (the twin check measures it). The pad gets `OutputQuantizeConfig`, so its ops are
int8 too: **every op of the file is int8** (``float_ops`` is empty) and the input quantization covers
the raw 0–255 range. ``weights.npz`` is unfolded back (`export.fold.unfold_weights`) into the zoo form that every
other recipe loads. ``layer``: the zoo graph with its ``preprocess`` Rescaling, which stays float (MUL + ADD with a
per-channel constant before the QUANTIZE; the converter cannot quantize a constant operand that carries no
fake-quant range) — the rows below.

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

import dataclasses
import sys

from absl import flags

from recipes.cli import UsageError, define_on_bad_image, print_rows, run
from workflows import qat
from workflows.qat import QatConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (python -m zoo list) or path of a spec .json (e.g. a search's "
                                   "derived.json).")
flags.DEFINE_string("weights", "", "Weights to start from: a zoo tag such as 'imagenet', a .npz path keyed "
                                   "'layer/variable' (e.g. the weights.npz of recipes.train), or '' for random init.")
flags.DEFINE_integer("classes", None, "Classifier width (default: the spec's); set it when --weights were trained on "
                                      "another class count. Must equal the dataset's class count.", lower_bound=2)
flags.DEFINE_string("dataset", "shapes", "Data: 'shapes' (built-in synthetic), 'folder:PATH' (class-per-folder "
                                         "images, PATH/train and PATH/test), 'tsv:PATH' (labels.tsv file list with a "
                                         "fixed 300-image test split) or a tensorflow-datasets name.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.")
define_on_bad_image()
flags.DEFINE_integer("input_size", None, "Square input size (default: the spec's input size).", lower_bound=8)
flags.DEFINE_integer("epochs", 1, "QAT fine-tuning epochs (0: quantize, calibrate and convert without training).",
                     lower_bound=0)
flags.DEFINE_integer("steps_per_epoch", None, "Optimizer steps per epoch (default: training examples // batch size).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Batch size of fine-tuning, calibration and evaluation.", lower_bound=1)
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "tf_keras optimizer: Adam, or SGD with momentum 0.9.")
flags.DEFINE_float("lr", 1e-4, "Learning rate (constant; QAT fine-tunes, so keep it small).", lower_bound=0.0)
flags.DEFINE_enum("augment", "standard", ["standard", "paper", "none"],
                  "Training augmentation (inputs.classification): 'standard', 'paper' or 'none'.")
flags.DEFINE_integer("limit", None, "Use only the first N training examples (quick runs).", lower_bound=1)
flags.DEFINE_integer("val_limit", 1000, "Evaluate on the first N examples of the test split (float, QAT and int8 "
                                        "TFLite top-1).", lower_bound=1)
flags.DEFINE_integer("calibration_batches", 10, "Training batches (no augmentation) whose float activation ranges "
                                                "start the QAT ranges; 0: tfmot's initial [-6, 6].", lower_bound=0)
flags.DEFINE_bool("int8_io", False, "int8 input and output tensors in the .tflite instead of float32 (feed "
                                    "round(x / scale + zero_point) of the raw 0–255 image; see the report's io).")
flags.DEFINE_enum("preprocessing", "fold", ["fold", "layer"],
                  "Input normalisation: 'fold' (default: mean/std folded into the stem conv and its BatchNorm before "
                  "QAT, border padded with the mean; raw 0–255 pixels in, every op int8) or 'layer' (the preprocess "
                  "layer, which stays float: MUL + ADD before the QUANTIZE).")
flags.DEFINE_string("out_dir", "runs/qat", "Directory of qat_report.json, weights.npz and the default --output.")
flags.DEFINE_string("output", None, "Path of the int8 .tflite (default: OUT_DIR/model_int8_qat.tflite).")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, data order and augmentation.")
flags.DEFINE_bool("progress", True, "Keras progress bar per epoch (verbose=1; otherwise one line per epoch).")
flags.mark_flag_as_required("model")


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    fields = [f.name for f in dataclasses.fields(QatConfig) if f.name != "produced_by"]
    config = QatConfig(**{k: getattr(FLAGS, k) for k in fields},
                       produced_by="python -m recipes.qat " + " ".join(sys.argv[1:]))
    result = qat.run(config)
    report, io, ops = result.report, result.report["io"], result.report["op_counts"]
    configs, parity = report["quantize_configs"], report["int8_vs_qat"]
    size, check = report["input_size"], report["twin_check"]
    rows = [("model", f"{report['model']} at {size}×{size}, {report['classes']} classes, weights: "
                      f"{config.weights or 'random init'}"),
            ("tf_keras twin", f"max|Δ| {check['max_abs_diff']:.2e} vs Keras 3 on {check['examples']} images"),
            ("quantize configs", f"output-only: {len(configs['output_only'])} layers, no-op: {len(configs['noop'])}"),
            (f"top-1 ({report['val_examples']} val)",
             f"float {report['float_top1']:.4f}, QAT before fine-tune {report['qat_top1_before_finetune']:.4f}, "
             f"QAT {report['qat_top1']:.4f}, int8 TFLite {report['int8_top1']:.4f}"),
            ("int8 vs QAT", f"top-1 agreement {parity['top1_agreement']:.4f}, logits max|Δ| "
                            f"{parity['max_abs_diff']:.3g}"),
            ("file", f"{result.output} ({report['file_bytes'] / 1e3:,.1f} kB, {io['input']['dtype']} in / "
                     f"{io['output']['dtype']} out)"),
            ("ops", ", ".join(f"{k}×{v}" for k, v in ops.items())),
            ("float ops", ", ".join(report["float_ops"]) or "none")]
    print_rows(rows)
    print(f"wrote {result.output}, {result.weights_path} and {result.report_path}")
    return 0


if __name__ == "__main__":
    run(main)
