"""Latency lookup table (LUT): per-part LiteRT latencies on this host, summed to predict a whole model.

A model is cut into **parts**: the ``stem`` (preprocess Rescaling + stem conv [+ pool]), every block ``s{i}_b{j}``
and the ``head`` (head conv, pooling, classifier). Each part has a canonical key (:func:`block_key`, :func:`stem_key`,
:func:`head_key`; format in ``KEY_FORMAT``) naming everything that changes its float32 TFLite graph and nothing else
(BN statistics, dropout and ``bits`` do not: BN folds into the convs, dropout is gone at inference, bits are QAT
metadata). Keys hold the part's input width and size, so a table is specific to an input resolution.

**Building** (:func:`build_table` / :func:`profile`): every spec with parts missing from the table is built with
:func:`models.builder.build` (random weights; latency does not depend on the values), converted once to float32
TFLite (:func:`to_tflite`: frozen concrete function → ``TFLiteConverter.from_concrete_functions``; the same operators
as ``from_keras_model`` without its SavedModel round trip) and the flatbuffer is **sliced** into one small model per
part (:func:`split_tflite`: the part's operators, tensors and weight buffers; its input the tensor entering the part,
its output the one leaving it). Each entry therefore runs exactly the operators the part has inside the whole model
(BN folded, activations fused), and a spec costs one conversion (seconds) instead of one per block. ``method="block"``
times one-block Keras models instead (:func:`block_model`: Input of the block's input shape → the block built by
:func:`models.builder._mbconv` / ``_shuffle``; same operators, a test), one conversion per distinct block.

**Timing** (:func:`time_chains`): ``ai_edge_litert.interpreter.Interpreter(num_threads=threads)`` (default XNNPACK
delegate), ``allocate_tensors``, ``warmup`` untimed invocations per model; then ``rounds`` rounds over all units in a
new random order, each unit one untimed pass and ``runs`` timed passes, every ``invoke()`` timed on its own. An entry
is the median of all its timed calls. Two choices, measured by ``benchmarks/latency_model.py`` (30 random ImageNet-space
architectures at 160×160, 1 thread, on a 2-core host shared with other jobs, load average 3–6):

- **chain context** (default): a spec's parts run in model order, each part's output copied into the next part's
  input outside the timed region, so the other parts' weights and activations pass through the caches in between,
  as inside the whole model. Parts timed alone, back to back (``context="isolated"``), keep their weights in cache
  and under-predict whole models: MAPE 5.4–5.5% (bias −5.4%) against 2.0–2.2% in chain context.
- **CPU clock** (default with one thread): the calling thread's CPU time (``time.thread_time_ns``; with one
  interpreter thread all work runs on it). On a loaded host a 20 ms invocation is often descheduled while a 0.3 ms
  part rarely is, so wall-clock medians of whole models exceed the sum of their parts' medians: wall-clock MAPE was
  5.2% in one run and 24.8% in another under heavier load, against 2.0–2.2% in CPU time. ``clock="wall"``
  (``perf_counter_ns``) is the default with more threads (the calling thread's CPU time would miss the pool's work).

**Invocation overhead.** Each one-part model pays the fixed cost of an ``invoke()`` that a whole model pays once.
Each session times a trivial model (one RELU on 8 floats); entries store ``ms = raw_ms − overhead_ms`` and
:meth:`LatencyTable.predict` returns ``overhead_ms + Σ part ms``. On this host that overhead is 1–2 µs, small next to
parts of 0.1–1 ms; but a part pays somewhat more fixed cost than the trivial model shows (about 10 µs: the 160×160
benchmark over-predicts by +0.5–1.9% on average, and 0.2 ms CIFAR models of 10 parts by about 6%).

**Fallback** for a part whose key is not in the table (FGNAS-style, affine in MACs): ``ms ≈ a·MACs + b``, least
squares over the table's entries of the finest group with at least two distinct MAC values: the part's **slot group**
(:func:`slot_group`: same kind, input width and size, output width, stride, activation, SE, residual, padding — the
same position of a search space, any kernel mix or pruning), else its kind (``stem``, ``ir``, ``shuffle``, ``head``),
else all entries. :meth:`LatencyTable.explain` reports per part the key, the ms and the fit used. (Benchmark,
30 ImageNet-space architectures, each with all its own block entries removed: MAPE ≈ 10% with slot groups, ≈ 19% with
one fit per kind, against ≈ 2% with the exact entries.)

The table (:meth:`LatencyTable.save` / :meth:`LatencyTable.load`) is JSON written atomically with the host (platform,
CPU model, cores, load average), the LiteRT/TensorFlow/Keras versions, threads, clock, context, warm-up, runs, rounds,
date and one record per timing session. Latencies are host-specific: :meth:`LatencyTable.compatible` refuses to
extend a table timed on another CPU or with other threads, LiteRT version, clock or context.
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from models.counting import Cost, _mbconv as _count_mbconv, _shuffle as _count_shuffle
from models.spec import MBConvSpec, ModelSpec, ShuffleSpec, check_input_size

TABLE_VERSION = 1
KINDS = ("stem", "ir", "shuffle", "head")
OVERHEAD = "__overhead__"
METHODS = ("slice", "block")
CLOCKS = ("cpu", "wall")
CONTEXTS = ("chain", "isolated")
FALLBACK_LEVELS = ("group", "kind", "all")
KEY_FORMAT = ("stem|c{channels}|n{size}|o{filters}|k{kernel}|s{stride}|a{act}|pool{0/1}|p{same/sym} · "
              "ir|i{in_ch}|n{in_size}|k{k}x{filters}+…|e{expand/-}|o{filters}|s{stride}|a{act}|se{se}|"
              "g{expand_groups}.{project_groups}|r{residual 0/1}|p{same/sym} · "
              "shuffle|i{in_ch}|n{in_size}|c{choice}|o{filters}|m{mid}|s{stride}|a{act}|p{same/sym} · "
              "head|i{in_ch}|n{in_size}|f{filters/-}|a{act}|cls{classes}|b{bias 0/1}")


class LatencyError(ValueError):
    """A table file is unreadable or incompatible, or a model cannot be cut into its parts."""


# --------------------------------------------------------------------------------------------------------------- keys
def _ceil_div(n: int, s: int) -> int:
    return -(-n // s)


def _pad(padding: str) -> str:
    return "sym" if padding == "symmetric" else "same"


def block_key(block, in_ch: int, in_size: int, padding: str = "same") -> str:
    """Canonical key of one block at its input ``in_ch`` × ``in_size`` × ``in_size``.

    ``ir|i{in_ch}|n{in_size}|k{k}x{c}+…|e{expand or -}|o{filters}|s{stride}|a{act}|se{se}|g{eg}.{pg}|r{0/1}|p{pad}``
    — branches in the spec's order (``k5x40+k7x20``: 40 filters at 5×5, 20 at 7×7); ``r1`` when the residual add is
    built (``skip``, stride 1, same width); ``p``: ``same`` or ``sym`` padding.
    ``shuffle|i{in_ch}|n{in_size}|c{choice}|o{filters}|m{mid}|s{stride}|a{act}|p{pad}`` for ShuffleNetV2 units.
    """
    pad = _pad(padding)
    if isinstance(block, MBConvSpec):
        branches = "+".join(f"k{k}x{c}" for k, c in zip(block.kernels, block.split))
        expand = "-" if block.expand_channels is None else str(block.expand_channels)
        residual = int(bool(block.skip and block.stride == 1 and in_ch == block.filters))
        return (f"ir|i{in_ch}|n{in_size}|{branches}|e{expand}|o{block.filters}|s{block.stride}|a{block.act}|"
                f"se{block.se_channels}|g{block.expand_groups}.{block.project_groups}|r{residual}|p{pad}")
    if isinstance(block, ShuffleSpec):
        return (f"shuffle|i{in_ch}|n{in_size}|c{block.choice}|o{block.filters}|m{block.mid_channels}|"
                f"s{block.stride}|a{block.act}|p{pad}")
    raise TypeError(f"block_key: not a block spec: {type(block).__name__}")


def stem_key(spec: ModelSpec, size: int) -> str:
    """``stem|c{channels}|n{size}|o{filters}|k{kernel}|s{stride}|a{act}|pool{0/1}|p{pad}`` (preprocess included)."""
    s = spec.stem
    return (f"stem|c{spec.input.channels}|n{size}|o{s.filters}|k{s.kernel}|s{s.stride}|a{s.act}|"
            f"pool{int(s.pool)}|p{_pad(spec.padding)}")


def head_key(spec: ModelSpec, in_ch: int, n: int, classes: int | None = None) -> str:
    """``head|i{in_ch}|n{n}|f{filters or -}|a{act}|cls{classes}|b{bias}`` (head conv, pooling, classifier)."""
    h = spec.head
    filters = "-" if h.filters is None else str(h.filters)
    cls = h.classes if classes is None else classes
    return f"head|i{in_ch}|n{n}|f{filters}|a{h.act}|cls{cls}|b{int(h.bias)}"


def slot_group(key: str) -> str:
    """The key without the fields a search changes in a fixed slot (kernel sizes and split, expanded width; shuffle
    choice and inner width): parts at the same position of a space share it. Stem and head keys map to their kind."""
    fields = key.split("|")
    if fields[0] == "ir":
        return "|".join(f for f in fields if not re.match(r"^(k\d|e(\d+|-)$)", f))
    if fields[0] == "shuffle":
        return "|".join(f for f in fields if not re.match(r"^(c[357x]|m\d+)$", f))
    return fields[0]


@dataclass(frozen=True)
class Part:
    """One part of a model: ``name`` is its layer-name prefix (``stem``, ``s{i}_b{j}``, ``head``)."""
    name: str
    kind: str
    key: str
    macs: int
    in_ch: int
    in_size: int
    block: object = None  # the block spec for ``ir``/``shuffle`` parts


def parts(spec: ModelSpec, input_size: int | None = None) -> list[Part]:
    """The stem, every block and the head of ``spec`` at ``input_size`` (default: the spec's), with keys and MACs
    (the :mod:`models.counting` convention: the parts' MACs sum to ``count(spec).macs``)."""
    size = spec.input.size if input_size is None else input_size
    check_input_size(spec, size)
    n = _ceil_div(size, spec.stem.stride)
    stem_macs = n * n * spec.stem.kernel ** 2 * spec.input.channels * spec.stem.filters
    if spec.stem.pool:
        n = _ceil_div(n, 2)
    out = [Part("stem", "stem", stem_key(spec, size), stem_macs, spec.input.channels, size)]
    ch = spec.stem.filters
    for i, j, b in spec.blocks():
        c = Cost()
        if isinstance(b, MBConvSpec):
            n_out = _count_mbconv(c, b, n, ch)
            kind = "ir"
        else:
            n_out = _count_shuffle(c, b, n, ch)
            kind = "shuffle"
        out.append(Part(f"s{i}_b{j}", kind, block_key(b, ch, n, spec.padding), c.macs, ch, n, b))
        n, ch = n_out, b.filters
    head_macs = 0
    width = ch
    if spec.head.filters is not None:
        head_macs += n * n * ch * spec.head.filters
        width = spec.head.filters
    head_macs += width * spec.head.classes
    out.append(Part("head", "head", head_key(spec, ch, n), head_macs, ch, n))
    return out


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


def split_tflite(buf: bytes, names: list[str]) -> dict[str, bytes]:
    """Cuts a whole-model TFLite flatbuffer into one flatbuffer per part.

    Args:
        buf: the model's ``.tflite`` bytes (one subgraph; as :func:`to_tflite` writes it).
        names: the parts in order (``["stem", "s0_b0", …, "head"]``, :func:`parts`).

    Every operator is assigned to a part by the Keras layer names in its output tensor's name (see the comments
    below for fused names and unnamed operators). The parts must follow each other in execution order and each must
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
    order = {n: i for i, n in enumerate(names)}

    def is_const(t: int) -> bool:
        b = sg.tensors[t].buffer
        return b > 0 and model.buffers[b].data is not None and len(model.buffers[b].data) > 0

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
            labels[o] = names[min(after)] if after else names[lowest(o)]
    for o in range(1, len(labels)):
        if order[labels[o]] < order[labels[o - 1]]:
            raise LatencyError(f"operator {o} of {labels[o]} runs after an operator of {labels[o - 1]}")
    missing = [n for n in names if n not in labels]
    if missing:
        raise LatencyError(f"no operators for part(s) {missing}")

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


def block_model(block, in_ch: int, in_size: int, spec: ModelSpec, keras_module=None):
    """A one-block Keras model (Input ``in_size²×in_ch`` → the block as :func:`models.builder.build` builds it), with
    the layer names it has in a model (prefix ``s0_b0``), for ``method="block"`` tables and cross-checks."""
    import keras as keras3

    from models.builder import _mbconv, _Ops, _shuffle
    K = keras3 if keras_module is None else keras_module
    o = _Ops(K, spec)
    inp = K.layers.Input((in_size, in_size, in_ch), name="x")
    if isinstance(block, MBConvSpec):
        y = _mbconv(o, inp, block, in_ch, "s0_b0")
    else:
        y = _shuffle(o, inp, block, in_ch, in_size, "s0_b0")
    return K.Model(inp, y, name="block")


# ---------------------------------------------------------------------------------------------------------- timing
def versions() -> dict:
    """Installed versions of the packages a table depends on (read from package metadata; nothing imported)."""
    from importlib import metadata
    out = {}
    for p in ("ai-edge-litert", "tensorflow", "keras", "numpy"):
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
    """``{"ms": median, "p10_ms", "p90_ms", "min_ms", "n"}`` of latencies in milliseconds."""
    ms = np.asarray(ms, np.float64)
    p10, med, p90 = np.percentile(ms, [10, 50, 90])
    return {"ms": float(med), "p10_ms": float(p10), "p90_ms": float(p90), "min_ms": float(ms.min()),
            "n": int(ms.size)}


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

    rng = np.random.default_rng(seed)
    bar = _bar(progress, len(flatbuffers) + rounds * len(chains), "timing")
    its = {}
    for key, buf in flatbuffers.items():
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


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=None)


# ----------------------------------------------------------------------------------------------------------- table
def _round(x, digits: int = 7):
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    return x


@dataclass
class Prediction:
    """``ms`` = ``overhead_ms`` + Σ ``parts[i]["ms"]``; ``fallback``: parts predicted by the MACs-affine fit."""
    ms: float
    overhead_ms: float
    fallback: int
    parts: list


class LatencyTable:
    """Entries ``{key: {"kind", "macs", "ms", "raw_ms", "overhead_ms", "p10_ms", "p90_ms", "n", "cpu_ms",
    "wall_ms"}}`` (``ms`` = ``raw_ms`` − the invocation overhead of its session, in the table's clock; ``cpu_ms`` /
    ``wall_ms``: raw medians in both clocks), the per-model ``overhead_ms`` and ``meta`` (host, versions, settings)."""

    def __init__(self, entries: dict | None = None, overhead_ms: float = 0.0, meta: dict | None = None):
        self.entries: dict[str, dict] = dict(entries or {})
        self.overhead_ms = float(overhead_ms)
        self.meta: dict = dict(meta or {})
        self._fit_cache = None

    def __len__(self):
        return len(self.entries)

    def __contains__(self, key):
        return key in self.entries

    def add(self, key: str, kind: str, macs: int, ms, overhead_ms: float, extra: dict | None = None) -> None:
        """Adds a part timed ``ms`` (array of milliseconds, the table's clock) in a session whose invocation
        overhead was ``overhead_ms``; ``extra`` fields (other clocks' medians) are stored as given."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        s = summarize(ms)
        self.entries[key] = {"kind": kind, "macs": int(macs), "ms": max(0.0, s["ms"] - overhead_ms),
                             "raw_ms": s["ms"], "overhead_ms": float(overhead_ms), "p10_ms": s["p10_ms"],
                             "p90_ms": s["p90_ms"], "n": s["n"], **(extra or {})}
        self._fit_cache = None

    # ----------------------------------------------------------------------------------------------------- files
    def to_json(self) -> dict:
        """The file's content; floats rounded to 7 significant digits (far below the timing noise)."""
        return _round({"format": "latency_lut", "version": TABLE_VERSION, "key_format": KEY_FORMAT,
                       "meta": self.meta, "overhead_ms": self.overhead_ms,
                       "entries": {k: self.entries[k] for k in sorted(self.entries)}})

    def save(self, path: str) -> None:
        """Writes the table as JSON atomically (temp file beside ``path``, then rename)."""
        from models.weights import atomic_write
        data = (json.dumps(self.to_json(), indent=1) + "\n").encode()
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def from_json(cls, obj, source: str = "table") -> "LatencyTable":
        if not isinstance(obj, dict) or obj.get("format") != "latency_lut":
            raise LatencyError(f"{source}: not a latency table (no \"format\": \"latency_lut\")")
        if obj.get("version") != TABLE_VERSION:
            raise LatencyError(f"{source}: unsupported table version {obj.get('version')!r} "
                               f"(this code reads {TABLE_VERSION})")
        entries = obj.get("entries")
        if not isinstance(entries, dict):
            raise LatencyError(f"{source}: entries must be an object")
        for k, e in entries.items():
            ok = (isinstance(e, dict) and e.get("kind") in KINDS and isinstance(e.get("macs"), int)
                  and isinstance(e.get("ms"), (int, float)) and not isinstance(e.get("ms"), bool)
                  and math.isfinite(e["ms"]) and e["ms"] >= 0)
            if not ok:
                raise LatencyError(f"{source}: entries[{k!r}] needs kind in {KINDS}, integer macs and finite ms ≥ 0")
        overhead = obj.get("overhead_ms", 0.0)
        if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or not math.isfinite(overhead) \
                or overhead < 0:
            raise LatencyError(f"{source}: overhead_ms must be a finite number ≥ 0")
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise LatencyError(f"{source}: meta must be an object")
        return cls(entries, overhead, meta)

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except OSError as e:
            raise LatencyError(f"{path}: cannot read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LatencyError(f"{path}: not valid JSON ({e})") from None
        return cls.from_json(obj, path)

    def compatible(self, threads: int, clock: str | None = None, context: str | None = None) -> str | None:
        """None when this table can be extended (or used) with these settings on this host: same CPU model, thread
        count, LiteRT version and (when given) clock and context; otherwise the reason it cannot."""
        m = self.meta
        if not m:
            return None if not self.entries else "a table without metadata"
        here = host()["cpu_model"]
        if m.get("host", {}).get("cpu_model") != here:
            return f"timed on {m.get('host', {}).get('cpu_model')!r}, not this host's {here!r}"
        if m.get("threads") != threads:
            return f"timed with {m.get('threads')} thread(s), not {threads}"
        want = versions()["ai-edge-litert"]
        if m.get("versions", {}).get("ai-edge-litert") != want:
            return f"timed with ai-edge-litert {m.get('versions', {}).get('ai-edge-litert')}, not {want}"
        for name, value in (("clock", clock), ("context", context)):
            if value is not None and m.get(name) != value:
                return f"timed with {name} {m.get(name)!r}, not {value!r}"
        return None

    # ------------------------------------------------------------------------------------------------ predicting
    def fallback_fit(self) -> dict[str, tuple[float, float, int]]:
        """``{name: (a, b, n)}``: least squares ``ms ≈ a·MACs + b`` over ``n`` entries, for every slot group
        (:func:`slot_group`) and every kind with at least two distinct MAC values, and under ``"all"`` over every
        entry (proportional when they share one MAC value)."""
        if self._fit_cache is not None:
            return self._fit_cache
        if not self.entries:
            raise LatencyError("the latency table is empty: nothing to predict or fall back on")
        groups: dict[str, list] = {"all": list(self.entries.values())}
        for key, e in self.entries.items():
            groups.setdefault(e["kind"], []).append(e)
            group = slot_group(key)
            if group != e["kind"]:
                groups.setdefault(group, []).append(e)
        fits = {}
        for name, es in groups.items():
            x = np.array([e["macs"] for e in es], np.float64)
            y = np.array([e["ms"] for e in es], np.float64)
            if len(set(x.tolist())) >= 2:
                a, b = np.polyfit(x, y, 1)
            elif name != "all":
                continue  # too few points for a line: a coarser fit serves
            elif x.sum() > 0:
                a, b = float(y.sum() / x.sum()), 0.0
            else:
                a, b = 0.0, float(y.mean())
            fits[name] = (float(a), float(b), len(es))
        self._fit_cache = fits
        return fits

    def fallback_ms(self, kind: str, macs: int, key: str | None = None, level: str = "group") -> tuple[float, str]:
        """``(max(0, a·MACs + b), fit name)`` from the finest fit available: the part's slot group (``key`` given,
        ``level="group"``), else its kind, else all entries."""
        if level not in FALLBACK_LEVELS:
            raise ValueError(f"level must be one of {FALLBACK_LEVELS}, got {level!r}")
        fits = self.fallback_fit()
        names = ([slot_group(key)] if key is not None and level == "group" else []) + \
            ([kind] if level != "all" else []) + ["all"]
        name = next(n for n in names if n in fits)
        a, b, _ = fits[name]
        return max(0.0, a * macs + b), name

    def explain(self, spec: ModelSpec, input_size: int | None = None, fallback: str = "group") -> Prediction:
        """Per-part prediction: ``parts`` = ``[{"part", "key", "kind", "macs", "ms", "source"}]``, ``source`` being
        ``"table"`` or ``"fallback:<fit>"`` (``fallback`` counts those). ``fallback``: the finest fit to use for
        unseen parts, ``"group"`` (slot group, then kind, then all), ``"kind"`` or ``"all"``."""
        rows, count_fb = [], 0
        for p in parts(spec, input_size):
            e = self.entries.get(p.key)
            if e is not None:
                ms, source = float(e["ms"]), "table"
            else:
                ms, fit = self.fallback_ms(p.kind, p.macs, p.key, fallback)
                source = f"fallback:{fit}"
                count_fb += 1
            rows.append({"part": p.name, "key": p.key, "kind": p.kind, "macs": p.macs, "ms": ms, "source": source})
        return Prediction(ms=self.overhead_ms + sum(r["ms"] for r in rows), overhead_ms=self.overhead_ms,
                          fallback=count_fb, parts=rows)

    def predict(self, spec: ModelSpec, input_size: int | None = None, fallback: str = "group") -> float:
        """Predicted milliseconds of one float32 TFLite invocation of ``spec`` (batch 1) on the table's host."""
        return self.explain(spec, input_size, fallback).ms

    def missing(self, specs, input_size: int | None = None) -> list[Part]:
        """The distinct parts of ``specs`` whose key is not in the table (first occurrence of each key)."""
        seen, out = set(), []
        for s in specs:
            for p in parts(s, input_size):
                if p.key not in self.entries and p.key not in seen:
                    seen.add(p.key)
                    out.append(p)
        return out

    def without(self, keys) -> "LatencyTable":
        """A copy without ``keys`` (e.g. to test the fallback on parts the table has not seen)."""
        drop = set(keys)
        return LatencyTable({k: v for k, v in self.entries.items() if k not in drop}, self.overhead_ms, self.meta)


# ----------------------------------------------------------------------------------------------------------- build
@dataclass
class Session:
    """What :func:`profile` timed: ``table`` (extended), ``models`` (whole-model ``{name: {"cpu": summary,
    "wall": summary}}``), ``samples`` (``{context: {key: {clock: ms array}}}`` of the parts timed now),
    ``overhead`` (``{clock: ms}``), ``kinds``/``macs`` of the timed keys, ``wall_s``."""
    table: LatencyTable
    models: dict
    samples: dict
    overhead: dict
    kinds: dict
    macs: dict
    wall_s: float

    def table_for(self, clock: str, context: str = "chain") -> LatencyTable:
        """A table of only this session's parts, timed in ``context`` and read in ``clock`` (for comparisons)."""
        t = LatencyTable(overhead_ms=self.overhead[clock], meta=dict(self.table.meta, clock=clock, context=context))
        for key, by_clock in self.samples.get(context, {}).items():
            t.add(key, self.kinds[key], self.macs[key], by_clock[clock], self.overhead[clock])
        return t


def _resolve_clock(clock: str, threads: int) -> str:
    if clock == "auto":
        return "cpu" if threads == 1 else "wall"
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of auto, {', '.join(CLOCKS)}; got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError("clock 'cpu' (the calling thread's CPU time) needs threads=1")
    return clock


def profile(specs, table: LatencyTable | None = None, threads: int = 1, warmup: int = 20, runs: int = 10,
            rounds: int = 5, seed: int = 0, input_size: int | None = None, method: str = "slice",
            clock: str = "auto", context: str = "chain", isolated: bool = False, measure_models: bool = False,
            progress: bool = True) -> Session:
    """Times the parts of ``specs`` missing from ``table`` (a new table when None) and adds them to it.

    Args:
        specs: :class:`~models.spec.ModelSpec` s (stem, MBConv/shuffle blocks, head).
        threads, warmup, runs, rounds, seed: timing settings (:func:`time_chains`).
        input_size: square input size of every spec (default: each spec's).
        method: ``"slice"`` (cut each spec's TFLite into parts, one conversion per spec) or ``"block"`` (one-block
            Keras models, one conversion per distinct block).
        clock: ``"cpu"`` (calling-thread CPU time; default with 1 thread), ``"wall"`` (default with more).
        context: ``"chain"``: a spec's parts run in model order, each output fed to the next part (the weights and
            activations of the other parts pass through the caches in between, as in the whole model);
            ``"isolated"``: each part alone, ``runs`` calls back to back.
        isolated: with ``context="chain"``, also time every new part alone (``Session.table_for(clock,
            "isolated")``) for comparison.
        measure_models: also time every whole spec alone, interleaved with the parts (``Session.models``).

    Raises:
        LatencyError: ``table`` was timed under other settings (:meth:`LatencyTable.compatible`), or a model cannot
            be cut into its parts.
    """
    import keras

    from models.builder import build
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    clock = _resolve_clock(clock, threads)
    specs = list(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("spec names must be distinct")
    table = LatencyTable() if table is None else table
    reason = table.compatible(threads, clock, context) if len(table) else None
    if reason:
        raise LatencyError(f"cannot extend a table {reason}")
    started = time.time()
    todo = {p.key: p for p in table.missing(specs, input_size)}
    flat: dict[str, bytes] = {OVERHEAD: overhead_tflite()}
    chains: dict[str, list[str]] = {f"part:{OVERHEAD}": [OVERHEAD]}
    keras.utils.set_random_seed(seed)
    bar = _bar(progress, len(specs), "converting")
    for s in specs:
        ps = parts(s, input_size)
        new = [p for p in ps if p.key in todo]
        if new or measure_models:
            size = s.input.size if input_size is None else input_size
            keras.backend.clear_session()
            whole = to_tflite(build(s, input_size=size))
            if measure_models:
                flat[f"model:{s.name}"] = whole
                chains[f"model:{s.name}"] = [f"model:{s.name}"]
            if new:
                pieces = split_tflite(whole, [p.name for p in ps])
                for p in ps:
                    if p.key in flat:
                        continue
                    if method == "block" and p.kind in ("ir", "shuffle"):
                        keras.backend.clear_session()
                        flat[p.key] = to_tflite(block_model(p.block, p.in_ch, p.in_size, s))
                    else:
                        flat[p.key] = pieces[p.name]
                if context == "chain":
                    chains[f"chain:{s.name}"] = [p.key for p in ps]
                for p in new:
                    if (context == "isolated" or isolated) and f"part:{p.key}" not in chains:
                        chains[f"part:{p.key}"] = [p.key]
        bar.update()
    bar.close()
    load_before = host()["loadavg"]
    raw = time_chains(flat, chains, threads=threads, warmup=warmup, runs=runs, rounds=rounds, seed=seed,
                      progress=progress)
    load_after = host()["loadavg"]
    overhead = {c: float(np.median(raw[f"part:{OVERHEAD}"][OVERHEAD][c])) for c in CLOCKS}
    samples: dict[str, dict] = {"chain": {}, "isolated": {}}
    for unit, by_key in raw.items():
        ctx = "chain" if unit.startswith("chain:") else "isolated"
        for key, by_clock in by_key.items():
            if key not in todo:
                continue
            dst = samples[ctx].setdefault(key, {c: [] for c in CLOCKS})
            for c in CLOCKS:
                dst[c].append(by_clock[c])
    samples = {ctx: {k: {c: np.concatenate(v[c]) for c in CLOCKS} for k, v in d.items()} for ctx, d in samples.items()}
    for key, by_clock in samples[context].items():
        p = todo[key]
        table.add(key, p.kind, p.macs, by_clock[clock], overhead[clock],
                  extra={f"{c}_ms": float(np.median(by_clock[c])) for c in CLOCKS})
    table.overhead_ms = overhead[clock]
    meta = dict(table.meta)
    meta.update(threads=threads, clock=clock, context=context, method=method, warmup=warmup, runs_per_round=runs,
                rounds=rounds, runtime="ai_edge_litert.interpreter.Interpreter (default XNNPACK delegate), float32, "
                                    "batch 1",
                statistic="median of the part's timed invoke() calls (rounds × runs, pooled over the specs it "
                          "appeared in), minus the session's invocation overhead",
                host=host(), versions=versions(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    sessions = list(meta.get("sessions", []))
    sessions.append({"date": meta["date"], "timed_parts": len(samples[context]), "timed_models": len(names)
                     if measure_models else 0, "overhead_ms": overhead, "loadavg_before": load_before,
                     "loadavg_after": load_after, "seconds": round(time.time() - started, 1)})
    meta["sessions"] = sessions
    table.meta = meta
    models = {}
    for unit, by_key in raw.items():
        if unit.startswith("model:"):
            name = unit.split(":", 1)[1]
            models[name] = {c: summarize(by_key[unit][c]) for c in CLOCKS}
    return Session(table=table, models=models, samples=samples, overhead=overhead,
                   kinds={k: todo[k].kind for k in todo}, macs={k: todo[k].macs for k in todo},
                   wall_s=time.time() - started)


def build_table(specs, threads: int = 1, warmup: int = 20, runs: int = 10, rounds: int = 5, seed: int = 0,
                table: LatencyTable | None = None, input_size: int | None = None, method: str = "slice",
                clock: str = "auto", context: str = "chain", progress: bool = True) -> LatencyTable:
    """The latency table of every distinct part (stem, blocks, head) of ``specs``, extending ``table`` if given
    (parts already in it are not timed again). See :func:`profile`."""
    return profile(specs, table, threads=threads, warmup=warmup, runs=runs, rounds=rounds, seed=seed,
                   input_size=input_size, method=method, clock=clock, context=context, progress=progress).table


# ---------------------------------------------------------------------------------------------------------- metrics
def ranks(x) -> np.ndarray:
    """Ranks (1 = smallest) with ties given their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(x, y) -> float:
    """Spearman's rank correlation (Pearson correlation of the average ranks)."""
    rx, ry = ranks(x), ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def mape(predicted, measured) -> float:
    """Mean absolute percentage error, in percent of the measured values."""
    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    return float(np.mean(np.abs(p - m) / m) * 100.0)
