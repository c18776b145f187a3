"""Analytic cost of a spec: parameters and multiply-accumulates (MACs) of one forward pass at batch 1.

Conventions (the published ones, e.g. MobileNetV2's "MAdds", timm/fvcore counts):
- params: trainable parameters of the Keras model — conv/dense kernels and biases, BatchNorm gamma and beta (moving
  statistics are not parameters).
- MACs: convolutions and the classifier only: ``H_out·W_out·k·k·C_in/groups·C_out`` for a conv,
  ``H_out·W_out·k·k·C`` for a depthwise conv, ``in·out`` for a dense layer; squeeze-excite 1×1 convs count once (they
  run on a 1×1 map). BatchNorm, activations, pooling, adds and the SE multiply are not counted.
The builder makes exactly these layers, so ``count(spec).params == model.count_params()`` of trainable weights, a test.
"""
from __future__ import annotations

from dataclasses import dataclass

from models.spec import MBConvSpec, ModelSpec, ShuffleSpec, check_input_size


@dataclass
class Cost:
    params: int = 0
    macs: int = 0

    def conv(self, n_out, k, c_in, c_out, groups=1, bias=False, bn=True):
        self.params += k * k * c_in // groups * c_out + (c_out if bias else 0) + (2 * c_out if bn else 0)
        self.macs += n_out * n_out * k * k * c_in // groups * c_out

    def dw(self, n_out, k, c, bn=True):
        self.params += k * k * c + (2 * c if bn else 0)
        self.macs += n_out * n_out * k * k * c


def _ceil_div(n, s):
    return -(-n // s)


def _mbconv(c: Cost, b: MBConvSpec, n_in: int, c_in: int):
    n_out = _ceil_div(n_in, b.stride)
    mid = sum(b.split)
    for k, ch in zip(b.kernels, b.split):
        if b.expand_channels is not None:
            c.conv(n_in, 1, c_in, ch, groups=b.expand_groups)
        c.dw(n_out, k, ch)
    if b.se_channels:
        c.conv(1, 1, mid, b.se_channels, bias=True, bn=False)
        c.conv(1, 1, b.se_channels, mid, bias=True, bn=False)
    c.conv(n_out, 1, mid, b.filters, groups=b.project_groups)
    return n_out


def _shuffle(c: Cost, b: ShuffleSpec, n_in: int, c_in: int):
    n_out = _ceil_div(n_in, b.stride)
    if b.stride == 2:
        k = 3 if b.choice == "x" else int(b.choice)
        c.dw(n_out, k, c_in)
        c.conv(n_out, 1, c_in, c_in)
        branch_in, branch_out = c_in, b.filters - c_in
    else:
        branch_in = branch_out = c_in // 2
    if b.choice == "x":
        widths = [(branch_in, b.mid_channels), (b.mid_channels, b.mid_channels), (b.mid_channels, branch_out)]
        for wi, wo in widths:
            c.dw(n_out, 3, wi)  # the first one carries the stride; n_out is its output size either way
            c.conv(n_out, 1, wi, wo)
    else:
        c.conv(n_in, 1, branch_in, b.mid_channels)
        c.dw(n_out, int(b.choice), b.mid_channels)
        c.conv(n_out, 1, b.mid_channels, branch_out)
    return n_out


def count(spec: ModelSpec, input_size: int | None = None, include_top: bool = True, classes: int | None = None) -> Cost:
    """Params and MACs of ``spec`` at a square ``input_size`` (default: the spec's), like the builder builds it."""
    size = spec.input.size if input_size is None else input_size
    check_input_size(spec, size)
    c = Cost()
    n = _ceil_div(size, spec.stem.stride)
    c.conv(n, spec.stem.kernel, spec.input.channels, spec.stem.filters)
    if spec.stem.pool:
        n = _ceil_div(n, 2)
    ch = spec.stem.filters
    for _, _, b in spec.blocks():
        n = (_mbconv if isinstance(b, MBConvSpec) else _shuffle)(c, b, n, ch)
        ch = b.filters
    if spec.head.filters is not None:
        c.conv(n, 1, ch, spec.head.filters)
        ch = spec.head.filters
    if include_top:
        k = spec.head.classes if classes is None else classes
        c.params += ch * k + (k if spec.head.bias else 0)
        c.macs += ch * k
    return c


def block_macs(spec: ModelSpec, input_size: int | None = None) -> list[int]:
    """MACs of each block of ``spec`` in order (stem, head and classifier excluded)."""
    size = spec.input.size if input_size is None else input_size
    check_input_size(spec, size)
    n = _ceil_div(size, spec.stem.stride)
    if spec.stem.pool:
        n = _ceil_div(n, 2)
    ch, out = spec.stem.filters, []
    for _, _, b in spec.blocks():
        c = Cost()
        n = (_mbconv if isinstance(b, MBConvSpec) else _shuffle)(c, b, n, ch)
        ch = b.filters
        out.append(c.macs)
    return out


def bitops(spec: ModelSpec, input_size: int | None = None) -> tuple[int, int]:
    """``(bitops, float_macs)``: Σ MACs·w·a over the blocks that carry ``bits`` (SPOS mixed precision), and the MACs
    of everything left in full precision (stem, head conv, classifier and blocks without ``bits``)."""
    total = count(spec, input_size).macs
    ops = quantized = 0
    for (_, _, b), macs in zip(spec.blocks(), block_macs(spec, input_size)):
        if b.bits is not None:
            ops += macs * b.bits.w * b.bits.a
            quantized += macs
    return ops, total - quantized
