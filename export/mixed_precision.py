"""Per-block mixed precision in one LiteRT model: int8, int16×8 (16-bit activations, 8-bit weights) or float.

LiteRT runs each of these per operator, and its QUANTIZE / DEQUANTIZE operators convert between them (int8 ↔ int16
requantization, float ↔ integer), but the TFLite converter quantizes a whole model to one activation type: its
int8 and int16×8 modes are model-wide, and only float fallback can be chosen per operator (the quantization
debugger's denylist, int8 only). So :func:`convert_mixed` builds the three conversions of one frozen graph and
splices them:

1. ``float``: the plain float32 conversion;
2. ``int8`` and ``int16x8``: TFLite's post-training quantizer (``optimize.calibrator``, the one the converter uses
   for 16×8) run twice on the same calibrated float model, once with int8 activations / int32 biases and once with
   int16 activations / int64 biases. Both carry the same operators on the same tensor indices (checked): only
   types, scales and constant buffers differ.

Every operator of the int8 model is assigned to a part of the spec (``stem``, ``s{i}_b{j}``, ``head``: the Keras
layer names in its output's name, :func:`search.tflite_timing.operator_parts`) and takes that part's precision:
its operator and constants come from that precision's conversion, and each input it reads is converted to the
type and scale it had there — a QUANTIZE (float → integer, or int8 ↔ int16 requantization) or DEQUANTIZE
(integer → float) inserted before it where the producer ran at another precision. So each operator sees exactly
the tensors of its home conversion, and a plan of one precision everywhere reproduces that conversion's outputs
(a test pins it). The operators the quantizer inserted (QUANTIZE of the input, requantizations before
concatenations and splits, the final DEQUANTIZE) follow the precision of the operator they serve and vanish in
float parts.

A spec's per-block ``bits`` (weight bits ``w``, activation bits ``a``; what ``search.spos`` derives) map to a
precision with :func:`precision_of`: ``w ≤ 8, a ≤ 8`` → int8; ``w ≤ 8, 8 < a ≤ 16`` → int16×8; wider → float.
The runtime has no sub-8-bit kernels: a block searched at fewer bits deploys at int8 (its size and speed are
int8's, its accuracy that of int8, not of the searched bit width).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable

PRECISIONS = ("int8", "int16x8", "float")


class MixedPrecisionError(ValueError):
    """The conversions cannot be spliced (different structure) or a plan names an unknown part or precision."""


def precision_of(bits, default: str = "int8") -> str:
    """The deployable precision of a block with ``bits`` (a ``BitsSpec``/``(w, a)`` pair, or None: ``default``)."""
    if bits is None:
        return default
    w, a = (bits.w, bits.a) if hasattr(bits, "w") else bits
    if w <= 8 and a <= 8:
        return "int8"
    if w <= 8 and a <= 16:
        return "int16x8"
    return "float"


def spec_plan(spec, default: str = "int8") -> dict[str, str]:
    """``{part: precision}`` for ``spec``'s stem, blocks and head: a block's from its ``bits``
    (:func:`precision_of`), the stem, the head and blocks without bits at ``default``."""
    if default not in PRECISIONS:
        raise MixedPrecisionError(f"default precision {default!r}: one of {', '.join(PRECISIONS)}")
    from search.latency import parts
    plan = {}
    for p in parts(spec):
        bits = getattr(p.site.block, "bits", None) if p.site is not None else None
        plan[p.name] = precision_of(bits, default)
    return plan


def conversions(model, representative: Callable[[], Iterable]) -> dict[str, bytes]:
    """The float32, int8 and int16×8 flatbuffers of ``model`` (float32 input and output), the two integer ones
    from one calibrated model by TFLite's post-training quantizer."""
    import tensorflow as tf
    from absl import logging
    from tensorflow.lite.python.optimize import calibrator

    from common.quiet_tf import filtered_stderr
    from export.litert import frozen_function
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        with filtered_stderr():
            converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_function(model)])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            out = {"float": bytes(converter.convert())}
            for name, act, bias in (("int8", tf.int8, tf.int32), ("int16x8", tf.int16, tf.int64)):
                cal = calibrator.Calibrator(calibrator.add_intermediate_tensors(out["float"]))
                out[name] = bytes(cal.calibrate_and_quantize(representative, tf.float32, tf.float32, True, act,
                                                             bias))
    finally:
        logging.set_verbosity(level)
    return out


def convert_mixed(model, plan: dict[str, str], representative: Callable[[], Iterable]) -> tuple[bytes, dict]:
    """One LiteRT flatbuffer of ``model`` with each part at ``plan[part]`` (one of `PRECISIONS`; parts are
    ``stem``, ``s{i}_b{j}``, ``head`` in execution order, e.g. :func:`spec_plan`); float32 input and output.
    Returns ``(flatbuffer, report)``."""
    return splice(conversions(model, representative), list(plan), plan)


def _model(buf: bytes):
    from ai_edge_litert import schema_py_generated as fb
    m = fb.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    if len(m.subgraphs) != 1:
        raise MixedPrecisionError(f"expected one subgraph, got {len(m.subgraphs)}")
    return m


def splice(bufs: dict[str, bytes], names: list[str], plan: dict[str, str]) -> tuple[bytes, dict]:
    """The mixed model from :func:`conversions`' ``bufs`` (see the module docstring); ``names``: the parts in
    execution order, ``plan``: a precision per part."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    from search.tflite_timing import LatencyError, operator_parts
    bad = {p: v for p, v in plan.items() if v not in PRECISIONS or p not in names}
    if bad or set(names) - set(plan):
        raise MixedPrecisionError(f"plan: every part of {names} at one of {PRECISIONS} (got {plan})")
    models = {k: _model(bufs[k]) for k in PRECISIONS}
    sgs = {k: m.subgraphs[0] for k, m in models.items()}
    A, B, F = sgs["int8"], sgs["int16x8"], sgs["float"]
    code = {k: [m.operatorCodes[op.opcodeIndex].builtinCode for op in sgs[k].operators] for k, m in models.items()}
    if (code["int8"] != code["int16x8"] or len(A.tensors) != len(B.tensors)
            or any(list(a.inputs) != list(b.inputs) or list(a.outputs) != list(b.outputs)
                   for a, b in zip(A.operators, B.operators))):
        raise MixedPrecisionError("the int8 and int16x8 conversions differ in structure: they cannot be spliced")
    if any(op.intermediates is not None and len(op.intermediates) for op in A.operators):
        raise MixedPrecisionError("operators with intermediate tensors (LSTM) are not supported")
    try:
        labels = operator_parts(A, names)
    except LatencyError as e:
        raise MixedPrecisionError(f"cannot assign the operators to the parts: {e}") from None
    Q, DQ = fb.BuiltinOperator.QUANTIZE, fb.BuiltinOperator.DEQUANTIZE
    # the int8 model's operators in order are the float model's with the quantizer's QUANTIZE/DEQUANTIZE inserted
    # (the quantizer renames tensors at the model's edges, so operators and tensors are matched by position)
    core, j = {}, 0
    for o in range(len(A.operators)):
        if j < len(F.operators) and code["int8"][o] == code["float"][j] \
                and len(A.operators[o].outputs) == len(F.operators[j].outputs):
            core[o], j = j, j + 1
        elif code["int8"][o] in (Q, DQ):
            core[o] = None
        else:
            raise MixedPrecisionError(f"operator {o} of the int8 model has no counterpart in the float model")
    if j != len(F.operators):
        raise MixedPrecisionError("the float model has operators the int8 model lacks")
    glue = [o for o, f in core.items() if f is None]
    f_to_a = {int(ft): int(at) for ft, at in zip(F.inputs, A.inputs)}
    for o, f in core.items():
        if f is not None:
            f_to_a.update({int(ft): int(at) for ft, at in zip(F.operators[f].outputs, A.operators[o].outputs)})
    producer, consumers = {}, {}
    for o, op in enumerate(A.operators):
        for t in op.outputs:
            producer[int(t)] = o
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(int(t), []).append(o)
    # precision of every int8-model operator: core ones their part's; a QUANTIZE the quantizer inserted serves its
    # consumer, a DEQUANTIZE its producer
    dom: list = [plan[labels[o]] if core[o] is not None else None for o in range(len(A.operators))]
    for _ in range(len(A.operators)):
        changed = False
        for o in glue:
            if dom[o] is not None:
                continue
            op = A.operators[o]
            if code["int8"][o] == Q:
                later = [dom[c] for c in consumers.get(int(op.outputs[0]), []) if dom[c] is not None]
                src = producer.get(int(op.inputs[0]))
                dom[o] = later[0] if later else (dom[src] if src is not None and dom[src] is not None else None)
            else:
                src = producer.get(int(op.inputs[0]))
                dom[o] = dom[src] if src is not None else None
            changed |= dom[o] is not None
        if not changed:
            break
    dom = [d if d is not None else plan[labels[o]] for o, d in enumerate(dom)]

    out = fb.ModelT()
    out.version = models["int8"].version
    out.description = b"mixed precision (int8 / int16x8 / float per part) spliced by export.mixed_precision"
    out.buffers = [fb.BufferT()]
    out.operatorCodes = []
    tensors, ops = [], []
    opcode_index: dict = {}
    const_cache: dict = {}
    rep: dict = {}   # (int8-model tensor, representation) -> merged tensor; representation: a precision
    native: dict = {}  # int8-model tensor -> the representation its producer wrote
    inserted = {"QUANTIZE": 0, "DEQUANTIZE": 0}

    def opcode(m, idx: int) -> int:
        oc = m.operatorCodes[idx]
        key = (oc.builtinCode, oc.deprecatedBuiltinCode, oc.version, oc.customCode)
        if key not in opcode_index:
            opcode_index[key] = len(out.operatorCodes)
            out.operatorCodes.append(copy.copy(oc))
        return opcode_index[key]

    def max_version(builtin: int) -> int:
        """The operator code of ``builtin`` with the highest version in the three conversions (every quantized
        conversion has QUANTIZE and DEQUANTIZE at its edges)."""
        found = [(oc.version, k, i) for k, m in models.items() for i, oc in enumerate(m.operatorCodes)
                 if oc.builtinCode == builtin]
        _, k, i = max(found)
        return opcode(models[k], i)

    def is_const(m, sg, t: int) -> bool:
        b = sg.tensors[t].buffer
        return b > 0 and m.buffers[b].data is not None and len(m.buffers[b].data) > 0

    def add_tensor(m, sg, t: int, suffix: bytes = b"") -> int:
        nt = copy.copy(sg.tensors[t])
        nt.name = (nt.name or b"") + suffix
        if is_const(m, sg, t):
            nb = fb.BufferT()
            nb.data = m.buffers[sg.tensors[t].buffer].data
            out.buffers.append(nb)
            nt.buffer = len(out.buffers) - 1
        else:
            nt.buffer = 0
        tensors.append(nt)
        return len(tensors) - 1

    def const(k: str, t: int) -> int:
        if (k, t) not in const_cache:
            const_cache[(k, t)] = add_tensor(models[k], sgs[k], t)
        return const_cache[(k, t)]

    def emit(opcode_idx: int, inputs, outputs, like=None):
        op = copy.copy(like) if like is not None else fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode_idx, list(inputs), list(outputs)
        ops.append(op)

    def kind_of(k: str, t: int) -> str:
        return "float" if sgs[k].tensors[t].type == fb.TensorType.FLOAT32 else k

    def get(t: int, want: str) -> int:
        """The merged tensor holding int8-model tensor ``t`` as ``want`` (a precision); converts on first use."""
        if (t, want) in rep:
            return rep[(t, want)]
        src = rep[(t, native[t])]
        if want == "float":
            nt = copy.copy(A.tensors[t])
            nt.name, nt.type, nt.quantization, nt.buffer = (nt.name or b"") + b"_float", fb.TensorType.FLOAT32, \
                None, 0
            tensors.append(nt)
            new = len(tensors) - 1
            emit(max_version(DQ), [src], [new])
            inserted["DEQUANTIZE"] += 1
        else:
            new = add_tensor(models[want], sgs[want], t, b"_as_" + want.encode())
            emit(max_version(Q), [src], [new])
            inserted["QUANTIZE"] += 1
        rep[(t, want)] = new
        return new

    for t in A.inputs:
        rep[(int(t), "float")] = add_tensor(models["int8"], A, int(t))
        native[int(t)] = "float"
    for o, d in enumerate(dom):
        if d != "float":
            k, sg = d, sgs[d]
            op = sg.operators[o]
            ins = [-1 if t < 0 else const(k, int(t)) if is_const(models[k], sg, int(t))
                   else get(int(t), kind_of(k, int(t))) for t in op.inputs]
            outs = []
            for t in op.outputs:
                new = add_tensor(models[k], sg, int(t))
                native[int(t)] = kind_of(k, int(t))
                rep[(int(t), native[int(t)])] = new
                outs.append(new)
            emit(opcode(models[k], op.opcodeIndex), ins, outs, like=op)
        elif core[o] is None:  # a QUANTIZE/DEQUANTIZE of the quantizer in a float part: the identity
            t_in, t_out = int(A.operators[o].inputs[0]), int(A.operators[o].outputs[0])
            rep[(t_out, "float")] = get(t_in, "float")
            native[t_out] = "float"
        else:
            fop = F.operators[core[o]]
            ins = []
            for t in fop.inputs:
                if t < 0:
                    ins.append(-1)
                elif is_const(models["float"], F, int(t)):
                    ins.append(const("float", int(t)))
                else:
                    ins.append(get(f_to_a[int(t)], "float"))
            outs = []
            for t in fop.outputs:
                at = f_to_a[int(t)]
                new = add_tensor(models["float"], F, int(t))
                native[at], rep[(at, "float")] = "float", new
                outs.append(new)
            emit(opcode(models["float"], fop.opcodeIndex), ins, outs, like=fop)
    sg = fb.SubGraphT()
    sg.name = A.name
    sg.tensors, sg.operators = tensors, ops
    sg.inputs = [rep[(int(t), "float")] for t in A.inputs]
    sg.outputs = [get(int(t), "float") for t in A.outputs]
    out.subgraphs = [sg]
    sig = copy.deepcopy(models["int8"].signatureDefs) if models["int8"].signatureDefs else None
    if sig:
        remap_in = dict(zip((int(t) for t in A.inputs), sg.inputs))
        remap_out = dict(zip((int(t) for t in A.outputs), sg.outputs))
        for s in sig:
            for m in s.inputs or []:
                m.tensorIndex = remap_in[m.tensorIndex]
            for m in s.outputs or []:
                m.tensorIndex = remap_out[m.tensorIndex]
    out.signatureDefs = sig
    builder = flatbuffers.Builder(1024)
    builder.Finish(out.Pack(builder), file_identifier=b"TFL3")
    counts = {p: sum(1 for o, d in enumerate(dom) if labels[o] == p and core[o] is not None) for p in names}
    report = {"plan": dict(plan), "operators_per_part": counts, "inserted": inserted,
              "precision_operators": {p: sum(1 for o, d in enumerate(dom) if d == p and core[o] is not None)
                                      for p in PRECISIONS}}
    return bytes(builder.Output()), report
