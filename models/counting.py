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

from models.spec import ConvSpec, MBConvSpec, ModelSpec, ShuffleSpec
from models.walk import Site, Walk, out_size, walk


@dataclass
class Cost:
    """Trainable parameters and MACs; ``conv``/``dw`` add one layer (with its BatchNorm unless ``bn=False``)."""
    params: int = 0
    macs: int = 0

    def conv(self, n_out, k, c_in, c_out, groups=1, bias=False, bn=True):
        self.params += k * k * c_in // groups * c_out + (c_out if bias else 0) + (2 * c_out if bn else 0)
        self.macs += n_out * n_out * k * k * c_in // groups * c_out

    def dw(self, n_out, k, c, bn=True):
        self.params += k * k * c + (2 * c if bn else 0)
        self.macs += n_out * n_out * k * k * c

    def act(self, act, c):
        """A per-branch activation of ``c`` channels: PReLU has one slope per channel, the others none."""
        if act == "prelu":
            self.params += c

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.macs + other.macs)


def mbconv_cost(b: MBConvSpec, in_ch: int, in_size: int) -> Cost:
    """Params and MACs of an MBConv block on an ``in_ch``-channel ``in_size``×``in_size`` input."""
    c = Cost()
    n_out = out_size(in_size, b.stride)
    mid = sum(b.split)
    for k, ch, act in zip(b.kernels, b.split, b.branch_acts()):
        if b.expand_channels is not None:
            c.conv(in_size, 1, in_ch, ch, groups=b.expand_groups)
        c.dw(n_out, k, ch)
        c.act(act, ch)
    if b.se_channels:
        c.conv(1, 1, mid, b.se_channels, bias=True, bn=False)
        c.conv(1, 1, b.se_channels, mid, bias=True, bn=False)
    c.conv(n_out, 1, mid, b.filters, groups=b.project_groups)
    return c


def conv_cost(b: ConvSpec, in_ch: int, in_size: int) -> Cost:
    """Params and MACs of a plain conv block (every branch's k×k conv with BN; pooling costs none)."""
    c = Cost()
    n_out = out_size(in_size, b.stride)
    for k, ch, act in zip(b.kernels, b.split, b.branch_acts()):
        c.conv(n_out, k, in_ch, ch)
        c.act(act, ch)
    return c


def shuffle_cost(b: ShuffleSpec, in_ch: int, in_size: int) -> Cost:
    """Params and MACs of a ShuffleNetV2 unit on an ``in_ch``-channel ``in_size``×``in_size`` input."""
    c = Cost()
    n_out = out_size(in_size, b.stride)
    if b.stride == 2:
        k = 3 if b.choice == "x" else int(b.choice)
        c.dw(n_out, k, in_ch)
        c.conv(n_out, 1, in_ch, in_ch)
        branch_in, branch_out = in_ch, b.filters - in_ch
    else:
        branch_in = branch_out = in_ch // 2
    if b.choice == "x":
        widths = [(branch_in, b.mid_channels), (b.mid_channels, b.mid_channels), (b.mid_channels, branch_out)]
        for wi, wo in widths:
            c.dw(n_out, 3, wi)  # the first one carries the stride; n_out is its output size either way
            c.conv(n_out, 1, wi, wo)
    else:
        c.conv(in_size, 1, branch_in, b.mid_channels)
        c.dw(n_out, int(b.choice), b.mid_channels)
        c.conv(n_out, 1, b.mid_channels, branch_out)
    return c


def block_cost(site: Site) -> Cost:
    """Params and MACs of the block at ``site`` (a :class:`models.walk.Site`)."""
    if isinstance(site.block, MBConvSpec):
        return mbconv_cost(site.block, site.in_ch, site.in_size)
    if isinstance(site.block, ConvSpec):
        return conv_cost(site.block, site.in_ch, site.in_size)
    return shuffle_cost(site.block, site.in_ch, site.in_size)


def stem_cost(w: Walk) -> Cost:
    """Params and MACs of the stem conv (with BN) of a walked spec; preprocessing and the max pool cost none."""
    c = Cost()
    if w.spec.stem.depthwise:  # depth multiplier out/in: each output channel sees one input channel
        c.conv(w.stem.conv_size, w.spec.stem.kernel, w.stem.in_ch, w.stem.out_ch, groups=w.stem.in_ch)
    else:
        c.conv(w.stem.conv_size, w.spec.stem.kernel, w.stem.in_ch, w.stem.out_ch)
    return c


def head_cost(w: Walk, include_top: bool = True, classes: int | None = None) -> Cost:
    """Params and MACs of the head of a walked spec: the 1×1 head conv (with BN) when there is one, and with
    ``include_top`` the classifier (``classes`` outputs, default the spec's)."""
    c, head = Cost(), w.spec.head
    if head.filters is not None:
        c.conv(w.head.in_size, 1, w.head.in_ch, head.filters)
    if include_top:
        k = head.classes if classes is None else classes
        c.params += w.head.width * k + (k if head.bias else 0)
        c.macs += w.head.width * k
    return c


def count(spec: ModelSpec, input_size: int | None = None, include_top: bool = True, classes: int | None = None) -> Cost:
    """Params and MACs of ``spec`` at a square ``input_size`` (default: the spec's), like the builder builds it."""
    w = walk(spec, input_size)
    c = stem_cost(w)
    for site in w.blocks:
        c = c + block_cost(site)
    return c + head_cost(w, include_top, classes)


def block_macs(spec: ModelSpec, input_size: int | None = None) -> list[int]:
    """MACs of each block of ``spec`` in order (stem, head and classifier excluded)."""
    return [block_cost(site).macs for site in walk(spec, input_size).blocks]


def bitops(spec: ModelSpec, input_size: int | None = None) -> tuple[int, int]:
    """``(bitops, float_macs)``: Σ MACs·w·a over the blocks that carry ``bits`` (SPOS mixed precision), and the MACs
    of everything left in full precision (stem, head conv, classifier and blocks without ``bits``)."""
    total = count(spec, input_size).macs
    ops = quantized = 0
    for site in walk(spec, input_size).blocks:
        b = site.block
        if b.bits is not None:
            macs = block_cost(site).macs
            ops += macs * b.bits.w * b.bits.a
            quantized += macs
    return ops, total - quantized


def peak_activation_bytes(spec: ModelSpec, input_size: int | None = None) -> int:
    """A lower bound of one image's peak float32 activation memory in a forward pass: the largest input + output of
    a single layer (the stem conv, each conv of every block, the head conv). The real peak of a framework is higher
    (a residual's input stays alive, kernels pick scratch space); this is what no implementation can do with less."""
    w = walk(spec, input_size)
    st = w.stem
    peak = spec.input.channels * w.input_size ** 2 + st.out_ch * st.conv_size ** 2
    for s in w.blocks:
        a, b = s.in_size ** 2, s.out_size ** 2
        if isinstance(s.block, MBConvSpec):
            mid = s.block.expand_channels or s.in_ch
            layers = (s.in_ch * a + mid * a, mid * a + mid * b, mid * b + s.out_ch * b)
        else:
            layers = (s.in_ch * a + s.out_ch * b,)
        peak = max(peak, *layers)
    h = w.head
    return 4 * max(peak, h.in_ch * h.in_size ** 2 + h.width * h.in_size ** 2)
