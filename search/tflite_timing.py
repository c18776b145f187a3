"""TFLite conversion, slicing and LiteRT timing for the latency table (:mod:`search.latency`), plus what recipes,
benchmarks and :mod:`export.litert` share: the one latency summary (:func:`summarize`), timed interpreter calls
(:func:`time_invokes`), a progress bar and host/version metadata.

Only numpy and the standard library are imported at module level: `host` and `versions` work without TensorFlow, and
the conversion/timing functions import TensorFlow and LiteRT when called.
"""
from __future__ import annotations

import copy
import os
import platform
import re
import time

import numpy as np

from common.errors import InputError
from common.io import progress_bar
from models.spec import ModelSpec


class LatencyError(InputError):
    """A table file is unreadable or incompatible, or a model cannot be cut into its parts."""

# ------------------------------------------------------------------------------------------------------- conversion
def to_tflite(model, input_shape: tuple | None = None) -> bytes:
    """Float32 TFLite flatbuffer of a Keras 3 model at batch 1 (TFLite builtin ops only).

    The model is traced at ``(1, *input_shape)`` (default: its input's static shape), its variables frozen to
    constants, and the frozen function converted: the same operators as ``TFLiteConverter.from_keras_model``
    (BN folded into convs, activations fused) in about half the time (no SavedModel written and re-read).
    """
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    shape = tuple(model.inputs[0].shape[1:]) if input_shape is None else tuple(input_shape)
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    from absl import logging
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # "consider providing the trackable_obj": not needed, nothing to track
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return bytes(converter.convert())
    finally:
        logging.set_verbosity(level)


def overhead_tflite() -> bytes:
    """A trivial model (one RELU on 8 floats): its latency is the fixed cost of one ``invoke()``."""
    import keras
    inp = keras.layers.Input((1, 1, 8), name="x")
    return to_tflite(keras.Model(inp, keras.layers.ReLU(name="relu")(inp), name="overhead"))


_BLOCK_RE = re.compile(r"^(s\d+_b\d+)_")
_STEM_RE = re.compile(r"^(preprocess|stem)(_|$)")
_HEAD_RE = re.compile(r"^(head_|pool(_\d+)?$|dropout(_\d+)?$|classifier(_\d+)?$)")


def _labels(name: str) -> list[str]:
    """The parts (``stem``, ``s{i}_b{j}``, ``head``) named in a TFLite tensor name, in order of appearance, from the
    Keras layer names in its name scopes (``model_1/s2_b0_dw_act_1/Relu;model_1/s2_b0_dw_1/depthwise``). The first
    is the operator's own layer; fused names can also carry constants that the converter shared with other layers
    (``…;model_1/s1_b1_g0_dw_bn_1/batchnorm/Rsqrt1``)."""
    found = []
    for piece in name.split(";"):
        for comp in piece.split("/"):
            m = _BLOCK_RE.match(comp)
            label = m.group(1) if m else "stem" if _STEM_RE.match(comp) else "head" if _HEAD_RE.match(comp) else None
            if label is not None:
                if label not in found:
                    found.append(label)
                break
    return found


def _aligned_buffer_type():
    from ai_edge_litert import schema_py_generated as fb

    class AlignedBuffer(fb.BufferT):
        """A buffer whose data starts on a 16-byte boundary, as the TFLite converter writes them."""

        def Pack(self, builder):
            data = None
            if self.data is not None and len(self.data):
                payload = np.asarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(payload), 16)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                try:
                    data = builder.EndVector()
                except TypeError:  # flatbuffers < 2 wants the length
                    data = builder.EndVector(len(payload))
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            return fb.BufferEnd(builder)

    return AlignedBuffer


def operator_parts(sg, names: list[str]) -> list[str]:
    """The part (one of ``names``: ``stem``, ``s{i}_b{j}``, ``head``, in execution order) of every operator of the
    flatbuffer subgraph ``sg`` (a ``schema_py_generated.SubGraphT``), by the Keras layer names in its output tensor's
    name (see the comments below for fused names and unnamed operators); :class:`LatencyError` when the parts do not
    follow each other in execution order or one has no operator."""
    order = {n: i for i, n in enumerate(names)}
    # The part of an operator: the first layer in its output's name, unless that precedes its inputs' parts (a
    # constant shared across layers named it); then the earliest named part not preceding them. An operator with no
    # layer in its name (a grouped conv is "convolution34"; a converter-inserted RESHAPE) joins the earliest part
    # that consumes its output, or its inputs' part when nothing does.
    producer, consumers = {}, {}
    for o, op in enumerate(sg.operators):
        for t in op.outputs:
            producer[int(t)] = o
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(int(t), []).append(o)
    labels: list = [None] * len(sg.operators)

    def lowest(o):
        return max((order[labels[producer[int(t)]]] for t in sg.operators[o].inputs
                    if t >= 0 and int(t) in producer and labels[producer[int(t)]] is not None), default=0)

    for o, op in enumerate(sg.operators):
        cands = [lab for t in op.outputs for lab in _labels(sg.tensors[t].name.decode(errors="replace"))
                 if lab in order]
        low = lowest(o)
        ok = [lab for lab in cands if order[lab] >= low]
        if cands and order[cands[0]] >= low:
            labels[o] = cands[0]
        elif ok:
            labels[o] = min(ok, key=order.get)
        elif cands:
            raise LatencyError(f"operator {o} (output {sg.tensors[op.outputs[0]].name.decode()[:120]!r}) is named "
                               f"after a part that runs before its inputs")
    for o in reversed(range(len(sg.operators))):
        if labels[o] is None:
            after = [order[labels[c]] for t in sg.operators[o].outputs for c in consumers.get(int(t), [])
                     if labels[c] is not None]
            if after:
                labels[o] = names[min(after)]
    for o in range(len(sg.operators)):  # nothing named consumes it (a chain of unnamed operators at the end)
        if labels[o] is None:
            labels[o] = names[lowest(o)]
    for o in range(1, len(labels)):
        if order[labels[o]] < order[labels[o - 1]]:
            raise LatencyError(f"operator {o} of {labels[o]} runs after an operator of {labels[o - 1]}")
    missing = [n for n in names if n not in labels]
    if missing:
        raise LatencyError(f"no operators for part(s) {missing}")
    return labels


def split_tflite(buf: bytes, names: list[str]) -> dict[str, bytes]:
    """Cuts a whole-model TFLite flatbuffer into one flatbuffer per part.

    Args:
        buf: the model's ``.tflite`` bytes (one subgraph; as :func:`to_tflite` writes it).
        names: the parts in order (``["stem", "s0_b0", …, "head"]``, :func:`parts`).

    Every operator is assigned to a part by the Keras layer names in its output tensor's name
    (:func:`operator_parts`). The parts must follow each other in execution order and each must
    have exactly one non-constant input tensor (the previous part's output, or the model input) and one output that
    later parts consume (or the model output); otherwise :class:`LatencyError`. Constant buffers are copied into
    every part that uses them, 16-byte aligned.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    if len(model.subgraphs) != 1:
        raise LatencyError(f"expected one subgraph, got {len(model.subgraphs)}")
    sg = model.subgraphs[0]

    def is_const(t: int) -> bool:
        b = sg.tensors[t].buffer
        return b > 0 and model.buffers[b].data is not None and len(model.buffers[b].data) > 0

    labels = operator_parts(sg, names)
    consumers = {}
    for o, op in enumerate(sg.operators):
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(int(t), []).append(o)
    model_outputs = set(int(t) for t in sg.outputs)
    aligned = _aligned_buffer_type()
    out = {}
    for name in names:
        ops = [o for o, lab in enumerate(labels) if lab == name]
        own = set(ops)
        produced = {int(t) for o in ops for t in sg.operators[o].outputs}
        inputs = sorted({int(t) for o in ops for t in sg.operators[o].inputs
                         if t >= 0 and not is_const(t) and int(t) not in produced})
        outputs = sorted(t for t in produced
                         if t in model_outputs or any(c not in own for c in consumers.get(t, [])))
        if len(inputs) != 1 or len(outputs) != 1:
            raise LatencyError(f"part {name} has {len(inputs)} input and {len(outputs)} output tensors (need 1 and 1)")
        tensor_map: dict[int, int] = {}
        tensors, buffers = [], [fb.BufferT()]

        def remap(t: int) -> int:
            if t < 0:
                return t
            if t not in tensor_map:
                nt = copy.copy(sg.tensors[t])
                if is_const(t):
                    nb = aligned()
                    nb.data = model.buffers[sg.tensors[t].buffer].data
                    buffers.append(nb)
                    nt.buffer = len(buffers) - 1
                else:
                    nt.buffer = 0
                tensor_map[t] = len(tensors)
                tensors.append(nt)
            return tensor_map[t]

        sub = fb.SubGraphT()
        sub.name = name.encode()
        sub.operators = []
        for o in ops:
            nop = copy.copy(sg.operators[o])
            nop.inputs = [remap(int(t)) for t in nop.inputs]
            nop.outputs = [remap(int(t)) for t in nop.outputs]
            if nop.intermediates is not None:
                nop.intermediates = [remap(int(t)) for t in nop.intermediates]
            sub.operators.append(nop)
        sub.inputs = [remap(inputs[0])]
        sub.outputs = [remap(outputs[0])]
        sub.tensors = tensors
        part = fb.ModelT()
        part.version = model.version
        part.operatorCodes = model.operatorCodes
        part.description = f"{name} of {(model.description or b'model').decode(errors='replace')}".encode()
        part.subgraphs = [sub]
        part.buffers = buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(part.Pack(builder), file_identifier=b"TFL3")
        out[name] = bytes(builder.Output())
    return out


def block_model(site, spec: ModelSpec, keras_module=None):
    """A one-block Keras model: Input ``site.in_size²×site.in_ch`` → the block of ``site`` (a
    :class:`models.walk.Site`) as :func:`models.builder.build` builds it, with the same layer names, for
    ``method="block"`` tables and cross-checks."""
    import keras as keras3

    from models.builder import Ops, build_block
    K = keras3 if keras_module is None else keras_module
    inp = K.layers.Input((site.in_size, site.in_size, site.in_ch), name="x")
    return K.Model(inp, build_block(Ops(K, spec), inp, site), name="block")


# ---------------------------------------------------------------------------------------------------------- timing
def versions(*packages: str) -> dict:
    """Installed versions of ``packages`` (default: what a latency table depends on), read from package metadata;
    nothing is imported."""
    from importlib import metadata
    out = {}
    for p in packages or ("ai-edge-litert", "tensorflow", "keras", "numpy"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def host() -> dict:
    """Platform, CPU model, logical cores, usable cores (affinity) and the 1/5/15-minute load average."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": cpu,
            "cores": os.cpu_count(), "usable_cores": usable, "python": platform.python_version(), "loadavg": load}


def summarize(ms) -> dict:
    """``{"median_ms", "p10_ms", "p90_ms", "mean_ms", "min_ms", "max_ms", "std_ms", "n"}`` of latencies in
    milliseconds: the one latency summary of the latency table, the export recipes and the benchmarks."""
    t = np.asarray(ms, np.float64)
    p10, med, p90 = np.percentile(t, [10, 50, 90])
    return {"median_ms": float(med), "p10_ms": float(p10), "p90_ms": float(p90), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "max_ms": float(t.max()), "std_ms": float(t.std()), "n": int(t.size)}


def time_invokes(it, runs: int, warmup: int = 20, progress: bool = False, cpu: bool = False):
    """Milliseconds (wall clock, ``time.perf_counter_ns`` around ``invoke()`` only) of ``runs`` timed calls of a
    LiteRT interpreter whose inputs are set, after ``warmup`` untimed ones. With ``cpu``: ``(wall, cpu)``, ``cpu``
    the calling thread's CPU time (``time.thread_time_ns``, the latency tables' clock) of the same calls."""
    for _ in range(warmup):
        it.invoke()
    bar = progress_bar(progress, runs, "latency", unit="run")
    times, cpu_times = np.empty(runs, np.float64), np.empty(runs, np.float64)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i in range(runs):
        c, t = cpu_clock(), clock()
        it.invoke()
        times[i] = (clock() - t) / 1e6
        cpu_times[i] = (cpu_clock() - c) / 1e6
        bar.update()
    bar.close()
    return (times, cpu_times) if cpu else times


def time_chains(flatbuffers: dict[str, bytes], chains: dict[str, list[str]], threads: int = 1, warmup: int = 20,
                runs: int = 10, rounds: int = 5, seed: int = 0, progress: bool = True) -> dict:
    """Times TFLite models with the LiteRT interpreter, run in chains and interleaved.

    Args:
        flatbuffers: ``{key: .tflite bytes}``; each gets one interpreter (``num_threads=threads``, XNNPACK),
            a fixed random input and ``warmup`` untimed invocations.
        chains: ``{unit: [key, …]}``. A unit runs its keys in order, each output copied into the next key's input
            (outside the timed region), as the parts of one model run; a one-key unit times a model alone.
        rounds, runs: ``rounds`` times, every unit in a new random order: one untimed pass, then ``runs`` timed
            passes, every ``invoke()`` timed on its own.

    Returns:
        ``{unit: {key: {"cpu": ms array, "wall": ms array}}}``: ``wall`` from ``time.perf_counter_ns``, ``cpu`` the
        calling thread's CPU time (``time.thread_time_ns``; with one interpreter thread all work runs on it).
    """
    from ai_edge_litert.interpreter import Interpreter

    from common.quiet_tf import filtered_stderr
    rng = np.random.default_rng(seed)
    bar = progress_bar(progress, len(flatbuffers) + rounds * len(chains), "timing")
    its = {}
    for key, buf in flatbuffers.items():
        with filtered_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            it = Interpreter(model_content=buf, num_threads=threads)
            it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], rng.standard_normal(tuple(int(v) for v in d["shape"])).astype(d["dtype"]))
        for _ in range(warmup):
            it.invoke()
        its[key] = it
        bar.update()
    plan = {}
    for unit, keys in chains.items():
        steps = []
        for k, key in enumerate(keys):
            nxt = None
            if k + 1 < len(keys):
                nxt = (its[key].get_output_details()[0]["index"], its[keys[k + 1]],
                       its[keys[k + 1]].get_input_details()[0]["index"])
            steps.append((key, its[key], nxt))
        plan[unit] = steps
    cpu_ns, wall_ns = time.thread_time_ns, time.perf_counter_ns
    raw = {unit: {key: ([], []) for key in keys} for unit, keys in chains.items()}
    units = list(chains)
    for _ in range(rounds):
        for u in rng.permutation(len(units)):
            unit = units[u]
            steps, rec = plan[unit], raw[unit]
            for timed in [False] + [True] * runs:
                for key, it, nxt in steps:
                    c0, w0 = cpu_ns(), wall_ns()
                    it.invoke()
                    w1, c1 = wall_ns(), cpu_ns()
                    if timed:
                        rec[key][0].append(c1 - c0)
                        rec[key][1].append(w1 - w0)
                    if nxt is not None:
                        nxt[1].set_tensor(nxt[2], it.get_tensor(nxt[0]))
            bar.update()
    bar.close()
    return {unit: {key: {"cpu": np.asarray(c, np.float64) / 1e6, "wall": np.asarray(w, np.float64) / 1e6}
                   for key, (c, w) in rec.items()} for unit, rec in raw.items()}
