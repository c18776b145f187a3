"""One walk over a spec: every block's widths, feature-map sizes and strides, computed in one place.

The pattern of timm's ``EfficientNetBuilder`` (its ``feature_info``): a single pass over the block specs tracks the
channel count, the spatial size and the cumulative stride, and everyone who needs them reads the result — the builder
(:func:`models.builder.build`), the analytic counts (:mod:`models.counting`), the latency table's parts
(:func:`search.latency.parts`) and the supernets. Nothing else re-derives them.

Sizes: every kernel is odd, so TF "same" padding and symmetric ``k // 2`` padding both give ``ceil(n / stride)``;
the stem's optional 3×3 stride-2 max pool (ShuffleNetV2) is part of the stem.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

from models.spec import BlockSpec, ConvSpec, MBConvSpec, ModelSpec, SpecError, check_input_size

ENDPOINT_STRIDES = (8, 16, 32)  # the feature maps build(features=True) returns (detection necks)


def out_size(n: int, stride: int) -> int:
    """Spatial size after a layer of ``stride`` on an ``n``×``n`` map (odd kernels, "same"/symmetric padding)."""
    return -(-n // stride)


@dataclass(frozen=True)
class Site:
    """One block where it sits in a model.

    Attributes:
        stage, index: position (``spec.stages[stage][index]``).
        name: layer-name prefix ``s{stage}_b{index}``.
        block: the block spec.
        in_ch, out_ch: input and output channels.
        in_size, out_size: input and output spatial size (square maps).
        stride: the block's own stride (a conv block's pool included).
        reduction: cumulative stride from the model input to the block's output (timm's ``reduction``).
    """
    stage: int
    index: int
    name: str
    block: BlockSpec
    in_ch: int
    out_ch: int
    in_size: int
    out_size: int
    stride: int
    reduction: int

    @property
    def kind(self) -> str:
        """``"ir"`` (MBConv), ``"shuffle"`` (ShuffleNetV2 unit) or ``"conv"`` (plain conv block)."""
        return self.block.block

    @property
    def residual(self) -> bool:
        """Whether the block ends in a residual add (MBConv with ``skip``, stride 1 and unchanged width)."""
        b = self.block
        return isinstance(b, MBConvSpec) and b.skip and b.stride == 1 and self.in_ch == b.filters


def block_stride(block: BlockSpec) -> int:
    """The block's stride from input to output: a conv block's 2×2 pool doubles its conv's stride
    (``ceil(ceil(n / s) / 2) == ceil(n / 2s)``)."""
    return block.stride * (2 if isinstance(block, ConvSpec) and block.pool else 1)


def block_site(block: BlockSpec, in_ch: int, in_size: int, *, stage: int = 0, index: int = 0,
               reduction_in: int = 1) -> Site:
    """The :class:`Site` of ``block`` on an ``in_ch``-channel ``in_size``×``in_size`` input (a one-block model by
    default: name ``s0_b0``); ``reduction_in`` is the cumulative stride of that input."""
    stride = block_stride(block)
    return Site(stage=stage, index=index, name=f"s{stage}_b{index}", block=block, in_ch=in_ch, out_ch=block.filters,
                in_size=in_size, out_size=out_size(in_size, stride), stride=stride, reduction=reduction_in * stride)


@dataclass(frozen=True)
class StemSite:
    """The stem: ``in_ch``×``in_size`` input → conv (``conv_size`` output) [→ 3×3/2 max pool] → ``out_ch``×``out_size``
    at cumulative stride ``reduction`` (pool included)."""
    in_ch: int
    in_size: int
    out_ch: int
    conv_size: int
    out_size: int
    reduction: int


@dataclass(frozen=True)
class HeadSite:
    """The head: ``in_ch``×``in_size`` input (the last block's output); ``width`` channels reach pooling and the
    classifier (the head conv's filters, or ``in_ch`` without a head conv)."""
    in_ch: int
    in_size: int
    width: int


@dataclass(frozen=True)
class Walk:
    """A spec walked at one input size: :func:`walk`'s result.

    Attributes:
        spec: the spec.
        input_size: the square input size.
        stem: the stem's widths and sizes.
        blocks: one :class:`Site` per block, in model order.
        head: the head's input.
        features: ``{reduction: name of the last block at that cumulative stride}`` (timm's ``feature_info``).
    """
    spec: ModelSpec
    input_size: int
    stem: StemSite
    blocks: tuple[Site, ...]
    head: HeadSite
    features: dict

    def endpoints(self, strides: tuple[int, ...] = ENDPOINT_STRIDES) -> tuple[Site, ...]:
        """The last block at each of ``strides`` (what ``build(features=True)`` returns).

        Raises:
            SpecError: no block ends at one of ``strides``.
        """
        missing = [s for s in strides if s not in self.features]
        if missing:
            raise SpecError("stages", f"no feature map at stride(s) {missing} for detection endpoints")
        by_name = {s.name: s for s in self.blocks}
        return tuple(by_name[self.features[s]] for s in strides)


def walk(spec: ModelSpec, input_size: int | None = None) -> Walk:
    """Walks ``spec`` at a square ``input_size`` (default: the spec's).

    Raises:
        SpecError: ``input_size`` does not fit the network (:func:`models.spec.check_input_size`).
    """
    if not isinstance(spec, ModelSpec):
        raise SpecError("spec", f"must be a ModelSpec (zoo.get_spec(name) or models.spec.loads(text)), got "
                                f"{type(spec).__name__}")
    size = spec.input.size if input_size is None else input_size
    check_input_size(spec, size)
    size = operator.index(size)  # a numpy integer becomes a Python int: no fixed-width overflow in the counts
    s = spec.stem
    conv_size = out_size(size, s.stride)
    n, reduction = conv_size, s.stride
    if s.pool:
        n, reduction = out_size(n, 2), reduction * 2
    stem = StemSite(in_ch=spec.input.channels, in_size=size, out_ch=s.filters, conv_size=conv_size, out_size=n,
                    reduction=reduction)
    blocks, features, ch = [], {}, s.filters
    for i, j, b in spec.blocks():
        here = block_site(b, ch, n, stage=i, index=j, reduction_in=reduction)
        blocks.append(here)
        features[here.reduction] = here.name
        ch, n, reduction = here.out_ch, here.out_size, here.reduction
    head = HeadSite(in_ch=ch, in_size=n, width=ch if spec.head.filters is None else spec.head.filters)
    return Walk(spec=spec, input_size=size, stem=stem, blocks=tuple(blocks), head=head, features=features)
