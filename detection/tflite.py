"""The detector as a LiteRT model: a Keras-compatible call of the interpreter, and the export that checks the float
file against Keras on raw head outputs (max|Δ|) and the int8 one by its val mAP and raw-output drift."""
from __future__ import annotations

import os

import numpy as np

from detection.predict import evaluate
from export import litert
from inputs.voc import eval_arrays

PARITY_IMAGES = 32  # at most this many val images in the Keras-vs-LiteRT raw-output comparison (all if fewer)


class TFLiteDetector:
    """A LiteRT interpreter called like the Keras detector: ``(B, S, S, 3)`` float → the three raw outputs in Keras
    order (matched by shape: the converter reorders them), one image per ``invoke``.

    Args:
        path: the ``.tflite`` file.
        keras_shapes: the Keras model's output shapes without the batch axis, in Keras order.
    """

    def __init__(self, path: str, keras_shapes: list[tuple]):
        self.it = litert.interpreter(path)
        details = self.it.get_output_details()
        by_shape = {tuple(int(d) for d in o["shape"][1:]): o for o in details}
        self.outputs = [by_shape[tuple(s)] for s in keras_shapes]
        self.input = self.it.get_input_details()[0]

    def __call__(self, x, training=False):
        results = [[] for _ in self.outputs]
        for image in np.asarray(x, np.float32):
            self.it.set_tensor(self.input["index"], litert.quantize(image[None], self.input))
            self.it.invoke()
            for out, detail in zip(results, self.outputs):
                out.append(litert.dequantize(self.it.get_tensor(detail["index"]), detail)[0])
        return [np.stack(r) for r in results]


def export_and_check(model, out_dir: str, mode: str, val_images, val_records, train_records, anchors,
                     input_size: int, num_classes: int, representative_images: int = 64,
                     parity_images: int = PARITY_IMAGES) -> dict:
    """Float32 (and int8) TFLite export of the detector, each checked.

    Writes ``model_float32.tflite`` (and ``model_int8.tflite``, full-integer, calibrated on the first
    ``representative_images`` letterboxed training images) under ``out_dir``.

    Args:
        model: the Keras detector.
        out_dir: output directory.
        mode: ``"float32"`` or ``"int8"`` (the float file too).
        val_images: uint8 val images (for the int8 mAP).
        val_records: their records (the first ``parity_images`` feed the raw-output comparisons).
        train_records: training records (int8 calibration).
        anchors: (9, 2) input pixels.
        input_size: S.
        num_classes: C.
        representative_images: calibration images of the int8 export.
        parity_images: at most this many val images (all of them if fewer) in the Keras-vs-LiteRT comparisons.

    Returns:
        ``{"float32": {"path", "bytes", "parity_max_abs", "parity_images"}}`` (max |Δ| over every raw output of the
        compared images, and their number) plus, for int8, ``"int8"``: path, bytes, calibration_images,
        raw_max_abs_diff, raw_mean_abs_diff, raw_keras_mean_abs and its val ``map50_voc07`` / ``map50_auc``.
    """
    shapes = [tuple(int(d) for d in o.shape[1:]) for o in model.outputs]
    report = {}
    path = os.path.join(out_dir, "model_float32.tflite")
    report["float32"] = {"path": path, "bytes": litert.export(model, path, "float32")}
    x, _ = eval_arrays(val_records[:parity_images], input_size)
    keras_out = [np.concatenate([np.asarray(o) for o in outs]) for outs in zip(
        *(model(x[i:i + 16], training=False) for i in range(0, len(x), 16)))]  # batches of 16: bounded memory
    lite_out = TFLiteDetector(path, shapes)(x)
    report["float32"]["parity_max_abs"] = float(max(np.abs(a - b).max() for a, b in zip(keras_out, lite_out)))
    report["float32"]["parity_images"] = len(x)
    if mode == "int8":
        calib, _ = eval_arrays(train_records[:representative_images], input_size)
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
