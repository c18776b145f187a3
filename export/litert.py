"""LiteRT (TFLite) helpers shared by the export, latency and demo recipes.

- `export` writes a ``.tflite`` of a Keras 3 model in one of `MODES`, atomically: `convert` hands the frozen model
  function and the mode's converter attributes (``optimizations``, ``representative_dataset``, ``target_spec``,
  ``inference_input_type``; what ``model.export(format="litert", …)`` passes on) to the TFLite converter.
- `interpreter`, `predict` and `latency` run a file with the ``ai_edge_litert`` interpreter (XNNPACK on CPU),
  quantizing inputs and dequantizing outputs of integer models; timing and `summarize` are
  :mod:`search.tflite_timing`'s (the latency table's), re-used here.
- `op_counts` reads the operators a file holds from its flatbuffer (no interpreter, no delegate rewriting).
- `check_tflite` needs neither TensorFlow nor LiteRT, so recipes can validate flags before the heavy imports.
  Host and package-version metadata come from `search.tflite_timing.host` / `versions` (no heavy imports either).

Modes: ``float32`` (no optimization); ``float16`` (weights stored as float16, DEQUANTIZE ops to float32 at load);
``dynamic`` (dynamic-range: int8 weights, float activations quantized on the fly); ``int8`` (full-integer: every
op int8 with per-channel weights, calibrated on a representative dataset; float32 input/output with QUANTIZE /
DEQUANTIZE at the edges, or int8 input/output with ``int8_io``). Only TFLite builtin ops are allowed (no Flex/select
TF ops, which the stand-alone LiteRT runtime lacks): a model that needs one fails to convert instead of failing later
on a phone.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Iterable

import numpy as np

from common.errors import InputError
from search.tflite_timing import summarize  # noqa: F401 — the one latency summary, re-exported for the recipes

MODES = ("float32", "float16", "dynamic", "int8")
TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier, bytes 4..8


# ---------------------------------------------------------------------------------------------------------------
# Cheap checks (no TensorFlow, no LiteRT)


def is_tflite(path: str) -> bool:
    """Whether ``path`` is a readable file carrying the TFLite flatbuffer identifier."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] == TFLITE_MAGIC


def check_tflite(path: str, flag: str = "--model") -> None:
    """Raises `InputError` unless ``path`` is an existing, readable TFLite flatbuffer."""
    if not os.path.exists(path):
        raise InputError(f"{flag} {path}: no such file")
    if not os.path.isfile(path):
        raise InputError(f"{flag} {path}: not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{flag} {path}: not readable")
    if not is_tflite(path):
        raise InputError(f"{flag} {path}: not a TFLite flatbuffer (no 'TFL3' identifier)")


# ---------------------------------------------------------------------------------------------------------------
# Export


def converter_options(mode: str, representative: Callable[[], Iterable] | None = None,
                      int8_io: bool = False) -> dict:
    """Keyword arguments for ``model.export(path, format="litert", **options)`` (TFLite converter attributes).

    Args:
        mode: one of `MODES`.
        representative: for ``int8``, a callable returning an iterable of ``[batch]`` lists (float32, raw model input).
        int8_io: for ``int8``, int8 input and output tensors instead of float32.
    """
    import tensorflow as tf
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if int8_io and mode != "int8":
        raise ValueError("int8_io needs mode 'int8'")
    builtins = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    if mode == "float32":
        return {"target_spec": builtins}
    if mode == "float16":
        return {"optimizations": [tf.lite.Optimize.DEFAULT],
                "target_spec": dict(builtins, supported_types=[tf.float16])}
    if mode == "dynamic":
        return {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": builtins}
    if representative is None:
        raise ValueError("mode 'int8' needs a representative dataset")
    options = {"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative,
               "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}}
    if int8_io:
        options.update(inference_input_type=tf.int8, inference_output_type=tf.int8)
    return options


def export(model, path: str, mode: str = "float32", representative: Callable[[], Iterable] | None = None,
           int8_io: bool = False, metadata: dict | None = None) -> int:
    """Converts a Keras 3 model to ``path`` (written to a temp name, then renamed); returns the file size in bytes.

    The exported signature has a dynamic batch and the model's static height, width and channels. ``metadata`` (a
    JSON-able dict: labels, normalisation, provenance) is embedded as the flatbuffer metadata entry
    `METADATA_NAME` (`read_metadata` reads it back; runtimes ignore it).
    """
    from common.io import atomic_write
    from common.quiet_tf import filtered_stderr
    options = converter_options(mode, representative, int8_io)
    with filtered_stderr():  # the converter's C++ notices (e.g. "NodeDef mentions attribute Truncate")
        data = convert(model, options)
    if metadata is not None:
        data = add_metadata(data, metadata)
    atomic_write(path, lambda f: f.write(data))
    return len(data)


def frozen_function(model):
    """``model``'s inference function traced once at a dynamic batch and its static height, width and channels,
    its variables frozen to constants (a concrete function the TFLite converter takes)."""
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants
    specs = [tf.TensorSpec((None, *x.shape[1:]), x.dtype, name=x.name.split(":")[0]) for x in model.inputs]
    single = len(specs) == 1
    fn = tf.function(lambda *xs: model(xs[0] if single else list(xs), training=False))
    return convert_to_constants.convert_variables_to_constants_v2(fn.get_concrete_function(*specs))


STATISTICS_WARNING = "Statistics for quantized inputs"  # the converter's UserWarning for int8 I/O (ranges known)


def convert(model, options: dict) -> bytes:
    """The flatbuffer of ``model`` under converter ``options`` (`converter_options`).

    What ``model.export(format="litert", **options)`` converts, without its SavedModel round trip (written, re-read
    and re-traced: about half of an export's time): the model is traced once at a dynamic batch and its static
    height, width and channels, its variables frozen to constants (BN then folds into the convs, as there), and the
    frozen function converted with the same converter attributes.
    """
    import tensorflow as tf
    from absl import logging
    frozen = frozen_function(model)
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # "consider providing the trackable_obj": a frozen graph tracks nothing
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        for key, value in options.items():
            if key == "target_spec":
                for attr, v in value.items():
                    setattr(converter.target_spec, attr, v)
            else:
                setattr(converter, key, value)
        with warnings.catch_warnings():  # int8 I/O: "Statistics for quantized inputs were expected, but not
            warnings.filterwarnings("ignore", message=STATISTICS_WARNING)  # specified": calibrated
            return bytes(converter.convert())
    finally:
        logging.set_verbosity(level)


METADATA_NAME = "nas_zoo"  # the flatbuffer metadata entry holding the export's JSON


def add_metadata(data: bytes, metadata: dict) -> bytes:
    """``data`` (a .tflite flatbuffer) with ``metadata`` as JSON in the model's metadata entry `METADATA_NAME`
    (replacing an earlier one)."""
    import json

    from tensorflow.lite.tools import flatbuffer_utils as fb
    model = fb.read_model_from_bytearray(bytearray(data))
    buffer = fb.schema_fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = fb.schema_fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    return bytes(fb.convert_object_to_bytearray(model))


def read_metadata(path_or_bytes) -> dict | None:
    """The `METADATA_NAME` JSON of a .tflite file (None when it has none); reads the flatbuffer only."""
    import json

    from ai_edge_litert import schema_py_generated as schema
    data = path_or_bytes
    if isinstance(path_or_bytes, str):
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() in (METADATA_NAME, METADATA_NAME.encode()):
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


# ---------------------------------------------------------------------------------------------------------------
# Reading and running a file


def op_counts(path_or_bytes) -> dict[str, int]:
    """``{builtin op name: number of nodes}`` over every subgraph of a TFLite file (read from the flatbuffer)."""
    from ai_edge_litert import schema_py_generated as fb
    if isinstance(path_or_bytes, (bytes, bytearray)):
        buf = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            buf = f.read()
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    model = fb.Model.GetRootAs(buf, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # schema ≥ 3a: the larger field is the real one
        if code == fb.BuiltinOperator.CUSTOM:
            custom = oc.CustomCode()
            codes.append(f"CUSTOM:{custom.decode() if custom else '?'}")
        else:
            codes.append(names.get(code, f"BUILTIN_{code}"))
    counts: dict[str, int] = {}
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for o in range(sg.OperatorsLength()):
            name = codes[sg.Operators(o).OpcodeIndex()]
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def input_shapes(path: str) -> list[dict]:
    """``[{"name", "shape", "shape_signature"}]`` of the main subgraph's inputs, read from the flatbuffer (no
    interpreter, so nothing is logged); -1 in ``shape_signature`` marks a dynamic dimension."""
    from ai_edge_litert import schema_py_generated as fb
    with open(path, "rb") as f:
        model = fb.Model.GetRootAs(f.read(), 0)
    sg = model.Subgraphs(0)
    out = []
    for i in range(sg.InputsLength()):
        t = sg.Tensors(sg.Inputs(i))
        shape = [int(v) for v in t.ShapeAsNumpy()] if t.ShapeLength() else []
        sig = [int(v) for v in t.ShapeSignatureAsNumpy()] if t.ShapeSignatureLength() else shape
        out.append({"name": (t.Name() or b"").decode(), "shape": shape, "shape_signature": sig})
    return out


def interpreter(path: str, threads: int = 1):
    """An ``ai_edge_litert`` interpreter on ``path`` with tensors allocated (XNNPACK delegate applied)."""
    from ai_edge_litert.interpreter import Interpreter

    from common.quiet_tf import filtered_stderr
    with filtered_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        it = Interpreter(model_path=path, num_threads=threads)
        it.allocate_tensors()
    return it


def _qparams(detail: dict) -> tuple[float, int]:
    scale, zero = detail["quantization"]
    if not scale:
        raise ValueError(f"tensor {detail['name']!r} of type {np.dtype(detail['dtype']).name} has no quantization")
    return float(scale), int(zero)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input → the tensor's dtype (identity cast for float tensors; affine quantization for integer ones)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = _qparams(detail)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """The tensor's values as float32 (dequantized for integer tensors)."""
    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero = _qparams(detail)
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def predict(it, images: np.ndarray) -> np.ndarray:
    """Runs ``images`` (float32, raw model input) one example at a time; float32 outputs of the first output."""
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for x in images:
        it.set_tensor(inp["index"], quantize(np.asarray(x)[None], inp))
        it.invoke()
        results.append(dequantize(it.get_tensor(out["index"]), out)[0])
    return np.stack(results)


def random_input(detail: dict, seed: int = 0) -> np.ndarray:
    """A fixed-seed random tensor for the input ``detail``: 0–255 for float inputs (raw RGB), full range else."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(d) for d in detail["shape"])
    if dtype.kind == "f":
        return rng.uniform(0.0, 255.0, shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    raise ValueError(f"no random input for dtype {dtype.name}")


def latency(it, runs: int, warmup: int = 20, seed: int = 0, progress: bool = True, cpu: bool = False):
    """Milliseconds of ``runs`` timed ``invoke()`` calls after ``warmup`` untimed ones, on fixed random inputs.

    Every input is set once; the timing is :func:`search.tflite_timing.time_invokes` (``time.perf_counter_ns``
    around ``invoke`` only; with ``cpu`` also the calling thread's CPU time: ``(wall, cpu)``), summarised by
    :func:`summarize`."""
    from search.tflite_timing import time_invokes
    for i, detail in enumerate(it.get_input_details()):
        it.set_tensor(detail["index"], random_input(detail, seed + i))
    return time_invokes(it, runs, warmup, progress=progress and runs >= 50, cpu=cpu)


def io_details(it) -> dict:
    """Shapes, dtypes and quantization of the first input and output, JSON-ready."""
    def one(d):
        scale, zero = d["quantization"]
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]],
                "shape_signature": [int(v) for v in d.get("shape_signature", d["shape"])],
                "dtype": np.dtype(d["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}
    return {"input": one(it.get_input_details()[0]), "output": one(it.get_output_details()[0])}
