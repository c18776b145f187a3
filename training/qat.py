"""Quantization-aware training building blocks for :mod:`workflows.qat` (the run; the command line and the QAT
support table live in :mod:`recipes.qat`): the Keras 3 model and its tf_keras twin, tfmot annotation with per-layer
configs, range initialisation, int8 conversion and LiteRT checks. TensorFlow, tf_keras and tfmot are imported inside
the functions.
"""
from __future__ import annotations

import sys

OUTPUT_QUANTIZED = ("Rescaling", "Multiply", "MeanPad")



def build_pair(spec, input_size: int | None = None, classes: int | None = None, weights: str | None = None,
               preprocessing: str = "fold"):
    """The Keras 3 model of ``spec`` (with its ``preprocess`` layer; weights loaded from the ``.npz`` ``weights``)
    and its tf_keras twin, both on raw pixels. ``preprocessing="fold"``: the twin is the folded build (no
    ``preprocess`` layer; mean/std in the stem conv and BatchNorm, border padded with the mean; `export.fold`)
    with `export.fold.fold_weights` of the model's; ``"layer"``: the same graph, weights copied by name."""
    import keras
    import tf_keras

    from models.builder import build
    from models.weights import assign, copy_weights, load_npz, named_weights
    model = build(spec, keras, input_size=input_size, classes=classes)
    if weights:
        load_npz(model, weights)  # every name and shape checked (the classifier against --classes)
    if preprocessing == "fold":
        from export.fold import fold_weights
        twin = build(spec, tf_keras, input_size=input_size, classes=classes, include_preprocessing="fold")
        assign(twin, fold_weights(spec, named_weights(model)), source=f"model {model.name!r}")
    else:
        twin = build(spec, tf_keras, input_size=input_size, classes=classes)
        copy_weights(model, twin)
    return model, twin


def max_abs_diff(model, twin, images) -> tuple[float, float]:
    """``(max|Δ|, max|logit|)`` between the Keras 3 model and the twin on ``images`` (inference mode)."""
    import numpy as np
    a = np.asarray(model(images, training=False))
    b = np.asarray(twin(images, training=False))
    return float(np.abs(a - b).max()), float(np.abs(a).max())


_CONFIGS = {}


def quantize_configs():
    """``(OutputQuantizeConfig, NoOpQuantizeConfig)``: `QuantizeConfig` subclasses (defined on first use, so that
    importing this module does not import TensorFlow)."""
    if _CONFIGS:
        return _CONFIGS["output"], _CONFIGS["noop"]
    import tensorflow_model_optimization as tfmot
    Q = tfmot.quantization.keras

    class NoOpQuantizeConfig(Q.QuantizeConfig):
        """Quantizes nothing of the layer: no weights, no inputs, no output range (the layer stays float)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class OutputQuantizeConfig(NoOpQuantizeConfig):
        """No weights or inputs quantized; the output gets an 8-bit asymmetric moving-average range (like tfmot's
        config of Add or Concatenate), so the converter can keep the layer and its consumers in int8."""

        def get_output_quantizers(self, layer):
            return [Q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                        narrow_range=False)]

    _CONFIGS.update(output=OutputQuantizeConfig, noop=NoOpQuantizeConfig)
    return OutputQuantizeConfig, NoOpQuantizeConfig


def quantize(twin):
    """Annotates every layer of the tf_keras ``twin`` and applies tfmot's default 8-bit QAT scheme.

    Layers the default registry refuses get `OutputQuantizeConfig` (`OUTPUT_QUANTIZED` types) or
    `NoOpQuantizeConfig` (any other type). BatchNormalization is left to tfmot's conv + BN transforms.

    Returns:
        ``(qat_model, {"output_only": [layer names], "noop": [layer names]})``.

    Raises:
        RuntimeError / ValueError from tfmot when a layer cannot be quantized (e.g. a BatchNormalization that does
        not follow a conv).
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras
    Q = tfmot.quantization.keras
    output_cfg, noop_cfg = quantize_configs()
    registry = Q.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    used = {"output_only": [], "noop": []}

    def annotate(layer):
        if isinstance(layer, tf_keras.layers.BatchNormalization) or registry.supports(layer):
            return Q.quantize_annotate_layer(layer)
        if type(layer).__name__ in OUTPUT_QUANTIZED:
            used["output_only"].append(layer.name)
            return Q.quantize_annotate_layer(layer, output_cfg())
        used["noop"].append(layer.name)
        return Q.quantize_annotate_layer(layer, noop_cfg())

    # The annotation wrappers hold the twin's own layers (as in tfmot's quantize_annotate_model), so the weights
    # carry over; quantize_apply then clones them into the QAT model.
    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    from models.builder import mean_pad_layer
    with Q.quantize_scope({"OutputQuantizeConfig": output_cfg, "NoOpQuantizeConfig": noop_cfg,
                           "MeanPad": mean_pad_layer(tf_keras)}):
        qat = Q.quantize_apply(annotated)
    return qat, used


def _range_variables(qat_model) -> dict[str, list]:
    """``{float layer name: [min variable, max variable]}`` of the moving-average ranges of each layer's output
    (``output_*`` or ``post_activation_*`` of a QuantizeWrapper; weight ranges are recomputed every step)."""
    out = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        found = {}
        for v in layer.weights:
            short = v.name.split("/")[-1].split(":")[0]
            if short in ("output_min", "post_activation_min"):
                found["min"] = v
            elif short in ("output_max", "post_activation_max"):
                found["max"] = v
        if len(found) == 2:
            out[inner.name] = [found["min"], found["max"]]
    return out


def init_weight_ranges(qat_model) -> int:
    """Sets the range of every weight quantizer from the current weights, as the first training step would
    (tfmot starts them at [-6, 6] and only updates them in training mode, so an untrained QAT model evaluates with
    far too coarse weights); returns the number of weights."""
    n = 0
    for layer in qat_model.layers:
        for weight, quantizer, variables in getattr(layer, "_weight_vars", ()):  # QuantizeWrapper internals
            quantizer(weight, training=True, weights=variables)  # LastValueQuantizer assigns its min/max
            n += 1
    return n


def calibrate(qat_model, twin, batches) -> int:
    """Sets the activation ranges of ``qat_model`` to the mean per-batch min/max (clipped to include 0, like tfmot's
    EMA update) of the matching float layer outputs of ``twin`` over ``batches`` (images only); returns the number
    of ranges set. The input layer's all-values range is set to the observed input range."""
    import numpy as np
    import tf_keras
    ranges = _range_variables(qat_model)
    names = [n for n in ranges if n in {l.name for l in twin.layers}]
    if not names:
        return 0
    probe = tf_keras.Model(twin.inputs, [twin.get_layer(n).output for n in names])
    lo = {n: [] for n in names}
    hi = {n: [] for n in names}
    x_lo, x_hi = np.inf, -np.inf
    for images in batches:
        outs = probe(images, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, o in zip(names, outs):
            o = np.asarray(o)
            lo[n].append(float(o.min()))
            hi[n].append(float(o.max()))
        x_lo, x_hi = min(x_lo, float(np.min(images))), max(x_hi, float(np.max(images)))
    if not np.isfinite(x_lo):
        return 0
    for n in names:
        vmin, vmax = ranges[n]
        vmin.assign(min(0.0, float(np.mean(lo[n]))))
        vmax.assign(max(0.0, float(np.mean(hi[n]))))
    for layer in qat_model.layers:  # the QuantizeLayer after the input (all-values range)
        if type(layer).__name__ == "QuantizeLayer":
            for v in layer.weights:
                short = v.name.split("/")[-1].split(":")[0]
                if short.endswith("_min"):
                    v.assign(min(0.0, x_lo))
                elif short.endswith("_max"):
                    v.assign(max(0.0, x_hi))
    return len(names)


def float_weights(qat_model, reference) -> dict:
    """The float weights inside ``qat_model`` keyed like `models.weights` (``layer/variable``), for every weight of
    ``reference`` (the twin); quantizer state (ranges, step counters) is left out.

    Raises:
        WeightsError: a weight of ``reference`` was not found in ``qat_model``.
    """
    import numpy as np

    from models.weights import WeightsError, named_weights
    wanted = named_weights(reference)
    found = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        for v in layer.weights:
            short = v.name.split("/")[-1].split(":")[0]
            key = f"{inner.name}/{'kernel' if short == 'depthwise_kernel' else short}"
            if key in wanted and tuple(v.shape) == wanted[key].shape:
                found[key] = np.asarray(v.numpy())
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise WeightsError(f"QAT model lacks {len(missing)} weight(s) of the float model, e.g. {missing[0]!r}")
    return {k: found[k] for k in wanted}


def convert(qat_model, int8_io: bool = False) -> bytes:
    """TFLite flatbuffer of a QAT model: int8 weights and activations from its fake-quant ranges, builtin ops only;
    float32 input/output unless ``int8_io``."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    io_type = tf.int8 if int8_io else tf.float32
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    import warnings

    from common.quiet_tf import filtered_stderr
    from export.litert import STATISTICS_WARNING
    with filtered_stderr(), warnings.catch_warnings():  # the converter's C++ notices (e.g. "NodeDef mentions
        warnings.filterwarnings("ignore", message=STATISTICS_WARNING)  # attribute Truncate"); its ranges: the
        return converter.convert()  # fake-quant layers' (the "statistics" it says are missing)


def float_ops(it) -> list[str]:
    """Ops of an allocated interpreter whose outputs are float32, other than DEQUANTIZE (i.e. ops the converter left
    unquantized), as ``"OP:tensor name"``."""
    import numpy as np
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():  # noqa: SLF001 — the only per-op listing the interpreter offers
        if op["op_name"] in ("DEQUANTIZE", "DELEGATE"):
            continue
        outs = [tensors[i] for i in op["outputs"] if i in tensors]
        if any(np.dtype(t["dtype"]) == np.float32 for t in outs):
            out.append(f"{op['op_name']}:{outs[0]['name']}")
    return out


def tflite_logits(path: str, images, progress: bool = False):
    """Float32 logits of a ``.tflite`` on ``images`` (raw 0–255, one at a time; int8 tensors (de)quantized), and
    the interpreter's float ops (read before XNNPACK rewrites the graph)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from export import litert
    plain = Interpreter(model_path=path, experimental_op_resolver_type=_no_delegate_resolver())
    plain.allocate_tensors()
    floats = float_ops(plain)
    it = litert.interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    iterator = images
    if progress:
        from tqdm import tqdm
        iterator = tqdm(images, desc="int8 tflite", unit="img", leave=False, file=sys.stderr, disable=None)
    results = []
    for x in iterator:
        it.set_tensor(inp["index"], litert.quantize(np.asarray(x)[None], inp))
        it.invoke()
        results.append(litert.dequantize(it.get_tensor(out["index"]), out)[0])
    return np.stack(results), floats, litert.io_details(it)


def _no_delegate_resolver():
    from ai_edge_litert.interpreter import OpResolverType
    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
