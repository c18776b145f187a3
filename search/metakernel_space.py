"""The meta-kernel search space as data (Chen et al. 2019, §4.3: a MixNet-like MBConv macro architecture whose
depthwise filters each choose a kernel size or "None"), without TensorFlow.

Recipes validate candidate sets and targets with this module before TensorFlow is imported; the Keras supernet
(:mod:`search.supernet`) and its layers (:mod:`search.metakernel`) are built from it.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from models.counting import count
from models.spec import (
    BNSpec,
    HeadSpec,
    InputSpec,
    MBConvSpec,
    ModelSpec,
    Provenance,
    StemSpec,
    check_input_size,
)
from models.walk import walk
from search import make_divisible


def check_candidates(candidates) -> tuple[int, ...]:
    """Validates a candidate set and returns it sorted: distinct odd sizes from 1 to the largest kernel a spec may
    hold (``models.spec.MAX_KERNEL``), so that every searched spec decodes."""
    from models.spec import MAX_KERNEL
    given = list(candidates)
    cands = tuple(int(k) for k in given)
    if not cands:
        raise ValueError("candidates: at least one kernel size is needed")
    if any(k < 1 or k % 2 == 0 or k > MAX_KERNEL for k in cands) or len(set(cands)) != len(cands):
        raise ValueError(f"candidates: need distinct odd kernel sizes from 1 to {MAX_KERNEL}, got {given}")
    return tuple(sorted(cands))


def kernel_masks(candidates, allow_none: bool = True) -> np.ndarray:
    """Centred masks ``M(i)`` of shape ``(choices, k_max, k_max)``; ``M(0)`` is all zeros when ``allow_none``."""
    cands = check_candidates(candidates)
    k_max = cands[-1]
    masks = [np.zeros((k_max, k_max), np.float32)] if allow_none else []
    for k in cands:
        m = np.zeros((k_max, k_max), np.float32)
        o = (k_max - k) // 2
        m[o:o + k, o:o + k] = 1.0
        masks.append(m)
    return np.stack(masks)


DW_MODES = ("meta", "multi", "fixed")


class Slot(NamedTuple):
    """One block position of a search space: its input width and size and its fixed macro settings."""
    stage: int
    index: int
    in_ch: int
    n_in: int
    expand: int | None  # expanded width (None: no expansion conv)
    filters: int
    stride: int
    se: int  # squeeze width (0: no SE)
    act: str

    @property
    def name(self) -> str:
        return f"s{self.stage}_b{self.index}"

    def spec(self, kernels, split) -> MBConvSpec:
        """The block with these kernel sizes and filters per size (pruning shrinks the expanded width)."""
        return MBConvSpec(kernels=tuple(int(k) for k in kernels), split=tuple(int(c) for c in split),
                          expand_channels=int(sum(split)) if self.expand else None, filters=self.filters,
                          stride=self.stride, act=self.act, se_channels=self.se)


@dataclass(frozen=True)
class StageSpace:
    """``repeats`` blocks of output width ``filters``; the first has ``stride``. ``expand``: expansion ratio of the
    block input width (1 = no expansion conv); ``se``: squeeze ratio of the block input width (0 = no SE)."""
    repeats: int
    filters: int
    stride: int
    expand: int
    se: float = 0.0
    act: str = "relu"


@dataclass(frozen=True)
class SearchSpace:
    name: str
    input_size: int
    stages: tuple[StageSpace, ...]
    candidates: tuple[int, ...] = (3, 5, 7)
    stem_filters: int = 16
    stem_stride: int = 2
    stem_act: str = "relu"
    head_filters: int | None = 1280
    head_act: str = "relu"
    dropout: float = 0.2
    classes: int = 1000
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    bn: BNSpec = field(default_factory=lambda: BNSpec(eps=1e-3, momentum=0.99))

    def __post_init__(self):
        object.__setattr__(self, "candidates", check_candidates(self.candidates))

    def replace(self, **changes) -> "SearchSpace":
        return dataclasses.replace(self, **changes)

    def blocks(self) -> tuple[Slot, ...]:
        """One :class:`Slot` per block, in order: the sites of ``models.walk.walk`` over the unpruned skeleton
        (the walk is the one place that tracks widths, sizes and strides)."""
        return self._slots

    @functools.cached_property
    def _slots(self) -> tuple[Slot, ...]:
        sites = walk(self.skeleton()).blocks
        return tuple(Slot(s.stage, s.index, s.in_ch, s.in_size, s.block.expand_channels, s.block.filters, s.stride,
                          s.block.se_channels, s.block.act) for s in sites)

    def skeleton(self, kernel: int | None = None, name: str | None = None) -> ModelSpec:
        """The space's spec with every filter at one kernel size (default ``k_max``), nothing pruned."""
        k = self.candidates[-1] if kernel is None else kernel
        stages, ch = [], self.stem_filters  # a block's expansion and SE widths are ratios of its input width
        for st in self.stages:
            blocks = []
            for j in range(st.repeats):
                expand = None if st.expand == 1 else ch * st.expand
                blocks.append(MBConvSpec(kernels=(k,), split=(expand or ch,), expand_channels=expand,
                                         filters=st.filters, stride=st.stride if j == 0 else 1, act=st.act,
                                         se_channels=max(1, int(ch * st.se)) if st.se > 0 else 0))
                ch = st.filters
            stages.append(tuple(blocks))
        return self.assemble(tuple(stages), name or f"{self.name}_k{k}")

    def mixed(self, kernels, partition: str = "uniform", expand_scale: float = 1.0,
              name: str | None = None) -> ModelSpec:
        """A hand-designed member of the space (the paper's Fig. 4 baselines): every block's depthwise filters split
        over ``kernels`` by ``partition`` (:func:`split_channels`), expanded widths scaled by ``expand_scale``.
        One kernel size is baseline A (vanilla depthwise), several are MixConv: ``"uniform"`` (B) or
        ``"exponential"`` (C). Blocks without an expansion conv take one kernel size only."""
        kernels = check_candidates(kernels)
        blocks = []
        for b in self.blocks():
            if not b.expand:
                if len(kernels) > 1:
                    raise ValueError(f"{b.name}: a block without expansion conv takes one kernel size, got "
                                     f"{list(kernels)}")
                blocks.append(b.spec(kernels, (b.in_ch,)))
                continue
            width = max(len(kernels), int(round(b.expand * expand_scale)))
            blocks.append(b.spec(kernels, split_channels(width, len(kernels), partition)))
        tag = "-".join(str(k) for k in kernels)
        return self.assemble((tuple(blocks),), name or f"{self.name}_{partition[:3]}_k{tag}")

    def matched(self, kernels, partition: str, target: float, tol: float = 0.02,
                name: str | None = None, cost=None, iters: int = 60, unit: str = "MACs") -> tuple[ModelSpec, float]:
        """:meth:`mixed` with the expansion scale that brings its cost within ``tol`` of ``target`` (bisection on
        the scale; the cost grows with it). ``cost``: spec → number, default its MACs (e.g. a measured latency,
        with fewer ``iters``). Returns ``(spec, scale)``; raises ValueError when no scale tried gets within ``tol``."""
        cost = cost or (lambda spec: count(spec).macs)
        lo, hi = 0.05, 20.0
        best = None
        for _ in range(iters):
            mid = (lo * hi) ** 0.5
            spec = self.mixed(kernels, partition, mid, name)
            c = cost(spec)
            if best is None or abs(c - target) < abs(best[2] - target):
                best = (spec, mid, c)
            if abs(c - target) <= tol * target:
                return spec, mid
            lo, hi = (mid, hi) if c < target else (lo, mid)
        fmt = "{:,.0f}" if unit == "MACs" else "{:.4g}"
        raise ValueError(f"{list(kernels)}/{partition}: no expansion scale within {tol:.0%} of {fmt.format(target)} "
                         f"{unit} (closest {fmt.format(best[2])} at scale {best[1]:.3f})")

    def thinnest(self) -> ModelSpec:
        """The cheapest architecture of the space: one filter per block at the smallest kernel."""
        k = self.candidates[0]
        blocks = tuple(b.spec((k,), (1,) if b.expand else (b.in_ch,)) for b in self.blocks())
        return self.assemble((blocks,), f"{self.name}_thinnest")

    def macs_range(self) -> tuple[int, int]:
        """(cheapest, dearest) MACs any derived architecture can have."""
        return count(self.thinnest()).macs, count(self.skeleton()).macs

    def assemble(self, stages, name, provenance=None) -> ModelSpec:
        """The space's zoo spec around ``stages`` (tuples of block specs): its input, stem, head and BN settings."""
        spec = ModelSpec(name=name, family="mbconv",
                         input=InputSpec(size=self.input_size, channels=3, mean=self.mean, std=self.std),
                         stem=StemSpec(filters=self.stem_filters, kernel=3, stride=self.stem_stride,
                                       act=self.stem_act, pool=False),
                         stages=stages,
                         head=HeadSpec(filters=self.head_filters, act=self.head_act, dropout=self.dropout,
                                       classes=self.classes, bias=True),
                         bn=self.bn, padding="same",
                         provenance=provenance or Provenance(method="metakernel", source=f"search space {self.name}"))
        check_input_size(spec, self.input_size)
        return spec


PARTITIONS = ("uniform", "exponential")


def split_channels(total: int, n: int, partition: str = "uniform") -> tuple[int, ...]:
    """MixConv's channel partitions of ``total`` filters over ``n`` kernel sizes (ascending): ``"uniform"`` (equal,
    the remainder to the first groups) or ``"exponential"`` (1/2, 1/4, …, the last two groups equal: 2^-(i+1) of
    the filters for group i < n−1, 2^-(n−1) for the last; the rounding remainder goes to the first, smallest
    kernel, so sizes never increase with the kernel). With two sizes both partitions are halves. Every group keeps
    at least one filter."""
    if n < 1 or total < n:
        raise ValueError(f"cannot split {total} filters over {n} kernel sizes")
    if partition == "uniform":
        return tuple(total // n + (1 if i < total % n else 0) for i in range(n))
    if partition == "exponential":
        sizes = [max(1, total >> (i + 1)) for i in range(n - 1)] + [max(1, total >> (n - 1))]
        sizes[0] += total - sum(sizes)
        while sizes[0] < max(sizes[1:]):  # tiny widths: the ones of the tail came out of the first group
            j = max(range(1, n), key=lambda i: (sizes[i], i))
            sizes[j] -= 1
            sizes[0] += 1
        return tuple(sizes)
    raise ValueError(f"partition: one of {PARTITIONS}, got {partition!r}")


def ablation_space(candidates=(3, 5, 7), expand: int = 3, classes: int = 10) -> SearchSpace:
    """The CIFAR backbone of the kernel-size ablation (the paper's Fig. 4 at CPU scale): inverted-residual blocks
    with ReLU, no squeeze-excite, every block with a 1×1 expansion (``expand`` × its input width) so that every
    depthwise filter can choose its own kernel; stem stride 2 (16×16 maps), stages 16/24/48/96 at strides 1/2/2/1.
    Every kernel 7×7 at ``expand=3`` costs 3.37M MACs."""
    stages = (StageSpace(1, 16, 1, expand, 0.0, "relu"),
              StageSpace(2, 24, 2, expand, 0.0, "relu"),
              StageSpace(2, 48, 2, expand, 0.0, "relu"),
              StageSpace(1, 96, 1, expand, 0.0, "relu"))
    return SearchSpace(name=f"ablation_e{expand}", input_size=32, stages=stages, candidates=tuple(candidates),
                       stem_filters=16, stem_stride=2, head_filters=256, dropout=0.1, classes=classes,
                       bn=BNSpec(eps=1e-3, momentum=0.9))


def cifar_space(width: float = 1.0, depth: int = 1, candidates=(3, 5, 7), input_size: int = 32,
                classes: int = 10) -> SearchSpace:
    """A CIFAR-sized MixNet-like space (32×32: strides 1, 2, 2, 2 → 4×4 before the head) for tests and proxy runs.

    ``width`` scales every width (multiples of 8, at least 8); ``depth`` repeats each stage's blocks.
    """
    w = lambda c: make_divisible(c * width, 8)  # noqa: E731
    stages = (StageSpace(1, w(16), 1, 1, 0.0, "relu"),
              StageSpace(2 * depth, w(24), 2, 3, 0.0, "relu"),
              StageSpace(2 * depth, w(40), 2, 6, 0.5, "swish"),
              StageSpace(2 * depth, w(80), 2, 6, 0.25, "swish"),
              StageSpace(1 * depth, w(120), 1, 3, 0.5, "swish"))
    return SearchSpace(name=f"cifar_w{width:g}_d{depth}", input_size=input_size, stages=stages,
                       candidates=tuple(candidates), stem_filters=w(16), stem_stride=1, head_filters=w(320),
                       dropout=0.1, classes=classes, bn=BNSpec(eps=1e-3, momentum=0.9))


def imagenet_space(candidates=(3, 5, 7, 9)) -> SearchSpace:
    """The 224×224 ImageNet space: MixNet-M's stage widths, strides, SE and activations (expansion 3 or 6, MixNet-M's
    depth less one block at width 80), every depthwise filter choosing among ``candidates`` or "None". Unpruned it
    costs 350M MACs with every kernel 3×3 and 507M at 9×9, so the paper's targets (260M and 370M for metaKernel-A/B)
    need pruning and kernel choice respectively."""
    stages = (StageSpace(1, 24, 1, 1, 0.0, "relu"),
              StageSpace(2, 32, 2, 3, 0.0, "relu"),
              StageSpace(4, 40, 2, 6, 0.5, "swish"),
              StageSpace(3, 80, 2, 6, 0.25, "swish"),
              StageSpace(3, 120, 1, 3, 0.5, "swish"),
              StageSpace(4, 200, 2, 6, 0.5, "swish"))
    return SearchSpace(name="imagenet_mixnet_m", input_size=224, stages=stages, candidates=tuple(candidates),
                       stem_filters=24, stem_stride=2, head_filters=1536, dropout=0.25, classes=1000)


LITE0_STAGES = (StageSpace(1, 16, 1, 1, 0.0, "relu6"),
                StageSpace(2, 24, 2, 6, 0.0, "relu6"),
                StageSpace(2, 40, 2, 6, 0.0, "relu6"),
                StageSpace(3, 80, 2, 6, 0.0, "relu6"),
                StageSpace(3, 112, 1, 6, 0.0, "relu6"),
                StageSpace(4, 192, 2, 6, 0.0, "relu6"),
                StageSpace(1, 320, 1, 6, 0.0, "relu6"))


def lite0_space(candidates=(3, 5, 7), classes: int = 1000) -> SearchSpace:
    """EfficientNet-Lite0's exact macro architecture (stem 32, stage widths, depths, expansion 6, strides, ReLU6, no
    SE, head 1280, its (x − 127) / 128 input and BN eps 1e-3) with every depthwise filter choosing among
    ``candidates`` or "None" (the first block, without expansion, chooses one size for the layer). Lite0 itself is
    a member (its 3×3 / 5×5 per stage), so its ImageNet weights seed the supernet (`MetaKernelSupernet.inherit`):
    the issue-15 route to metaKernel-A/B without ImageNet."""
    return SearchSpace(name="lite0", input_size=224, stages=LITE0_STAGES, candidates=tuple(candidates),
                       stem_filters=32, stem_stride=2, stem_act="relu6", head_filters=1280, head_act="relu6",
                       dropout=0.2, classes=classes, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0),
                       bn=BNSpec(eps=1e-3, momentum=0.99))
