"""The FGNAS search space as data (Kim et al., "Fine-Grained Neural Architecture Search"), without TensorFlow.

A space is a *backbone* spec at full width plus candidate operations. Every searched layer computes all M
operations at full width and keeps, per operation and output channel, a binary gate (paper Eq. 1–2):

    x_ℓ = (1/M) Σ_i G_{ℓ,i} ⊙ o_i(x_{ℓ−1}),   o_i = conv(k_i) → BN → act_i

Operations are (kernel size, activation) pairs, kernel-major; pairs with the same kernel share one conv + BN and
differ only in activation (paper Fig. 3). Searched layers are the backbone's ``conv`` blocks (their output channels)
and its ``ir`` blocks with an expansion (their expanded channels: the depthwise conv is the searched operation, the
1×1 expansion and projection stay). Other blocks (``ir`` without expansion, ``shuffle``) and the stem are fixed.

An *architecture* is one boolean array ``(M, C)`` per searched layer (op × channel). Its derived spec
(:meth:`FgnasSpace.derive`) has one branch per operation with any channel on (kernel ``k_i``, activation
``act_i``, ``split`` = the channel count), in operation order; a channel with every gate off is pruned, a channel
with several gates on (a "compositional" operation) appears in each of those branches, and the sum and the 1/M of
Eq. 1 are folded into the weights of the next linear layer (next conv, 1×1 projection or classifier): no extra ops.
So the deployed width that the next layer reads is Σ_i ‖G_i‖₁ — each compositional channel counts once per branch.

The derived model is stock layers (DESIGN.md §3), and :func:`models.counting.count` of it is the exact resource of
the architecture; the supernet's differentiable regularizer equals it for hard gates (a test).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from models.counting import count
from models.spec import (
    BRANCH_ACTIVATIONS,
    BNSpec,
    ConvSpec,
    HeadSpec,
    InputSpec,
    MBConvSpec,
    ModelSpec,
    Provenance,
    StemSpec,
)
from models.walk import Site, walk
from search import make_divisible
from search.metakernel_space import check_candidates

RESOURCES = ("params", "macs", "latency")  # latency: search.fgnas_latency.AffineLatency


@dataclass(frozen=True)
class Layer:
    """One searched layer: its block ``site`` in the backbone, the kind (``conv`` | ``ir``), its full width
    (``channels``: a conv block's filters, an ir block's expanded width) and whether its input is the output of the
    searched layer before it (``chained``: a conv block after a conv block; the input width is then that layer's
    deployed width)."""
    index: int
    site: Site
    kind: str
    channels: int
    chained: bool

    @property
    def name(self) -> str:
        return self.site.name


def check_ops(kernels, acts) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Validates candidate kernel sizes and activations; returns them (kernels sorted, activations in the given
    order)."""
    try:
        ks = check_candidates(kernels)
    except ValueError as e:
        raise ValueError(f"kernels: {str(e).split(': ', 1)[1]}") from None
    acts = tuple(acts)
    if not acts or len(set(acts)) != len(acts) or any(a not in BRANCH_ACTIVATIONS for a in acts):
        raise ValueError(f"acts: need distinct activations from {', '.join(BRANCH_ACTIVATIONS)}, got {list(acts)}")
    return ks, acts


@dataclass(frozen=True)
class FgnasSpace:
    """A backbone at full width and the candidate operations of every searched layer (see the module docstring).

    Attributes:
        backbone: the network searched from (its searched blocks' own kernel sizes and activations are replaced by
            the candidates; widths are the maxima).
        kernels: candidate kernel sizes (conv blocks: k×k convs; ir blocks: k×k depthwise convs).
        acts: candidate activations of every operation.
    """
    backbone: ModelSpec
    kernels: tuple[int, ...] = (3,)
    acts: tuple[str, ...] = ("relu",)

    def __post_init__(self):
        ks, acts = check_ops(self.kernels, self.acts)
        object.__setattr__(self, "kernels", ks)
        object.__setattr__(self, "acts", acts)
        self.layers()  # validates the backbone

    @property
    def ops(self) -> tuple[tuple[int, str], ...]:
        """The M operations, kernel-major: ``(k, act)``."""
        return tuple((k, a) for k in self.kernels for a in self.acts)

    @property
    def classes(self) -> int:
        return self.backbone.head.classes

    def layers(self) -> tuple[Layer, ...]:
        """The searched layers in model order.

        Raises:
            ValueError: a searched conv block feeds something its sum cannot be folded into (a fixed block, an ir
                block with a residual add, a max pool when compositional channels are possible), or nothing is
                searched.
        """
        if self.backbone.padding != "same":
            raise ValueError("backbone: FGNAS supernets use 'same' padding")
        out, prev_conv = [], False
        compositional = len(self.ops) > 1
        for site in walk(self.backbone).blocks:
            b = site.block
            if isinstance(b, ConvSpec):
                if compositional and b.pool == "max":
                    raise ValueError(f"{site.name}: a max pool cannot follow channels that sum several operations; "
                                     "use pool 'avg' (linear) in an FGNAS backbone with several operations")
                out.append(Layer(len(out), site, "conv", b.filters, prev_conv))
                prev_conv = True
                continue
            if prev_conv and not (isinstance(b, MBConvSpec) and b.expand_channels is not None and not site.residual):
                raise ValueError(f"{site.name}: the block after a searched conv block must be a conv block, an ir "
                                 "block with an expansion and no residual, or the head")
            if isinstance(b, MBConvSpec) and b.expand_channels is not None:
                if b.se_channels or b.expand_groups > 1 or b.project_groups > 1:
                    raise ValueError(f"{site.name}: FGNAS ir blocks have no SE and no grouped 1×1 convs")
                out.append(Layer(len(out), site, "ir", b.expand_channels, prev_conv))
            prev_conv = False
        if not out:
            raise ValueError("backbone: no searchable block (conv blocks or ir blocks with an expansion)")
        return tuple(out)

    def full_arch(self) -> list[np.ndarray]:
        """Every gate on: the backbone with all M operations on every channel."""
        return [np.ones((len(self.ops), layer.channels), bool) for layer in self.layers()]

    def single_op_arch(self, op: int = 0) -> list[np.ndarray]:
        """Only operation ``op`` on every channel (a plain network of one operation)."""
        arch = [np.zeros((len(self.ops), layer.channels), bool) for layer in self.layers()]
        for a in arch:
            a[op] = True
        return arch

    def check_arch(self, arch) -> list[np.ndarray]:
        """``arch`` as boolean arrays, checked against the layers' shapes; every layer keeps at least one channel."""
        layers = self.layers()
        if len(arch) != len(layers):
            raise ValueError(f"arch: {len(layers)} layers expected, got {len(arch)}")
        out = []
        for layer, a in zip(layers, arch):
            a = np.asarray(a).astype(bool)
            if a.shape != (len(self.ops), layer.channels):
                raise ValueError(f"arch[{layer.name}]: shape {(len(self.ops), layer.channels)} expected, got {a.shape}")
            if not a.any():
                raise ValueError(f"arch[{layer.name}]: every channel is pruned")
            out.append(a)
        return out

    def branches(self, gates: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``[(op index, channel indices)]`` of one layer's gates: the derived branches in order."""
        return [(i, np.flatnonzero(g)) for i, g in enumerate(gates) if g.any()]

    def derive_block(self, layer: Layer, gates: np.ndarray):
        """The derived block spec of one searched layer."""
        b, ops = layer.site.block, self.ops
        groups = self.branches(gates)
        kernels = tuple(ops[i][0] for i, _ in groups)
        acts = tuple(ops[i][1] for i, _ in groups)
        split = tuple(len(c) for _, c in groups)
        if layer.kind == "conv":
            act = acts[0] if len(set(acts)) == 1 else b.act
            return ConvSpec(kernels=kernels, split=split, filters=sum(split), stride=b.stride, act=act,
                            acts=None if set(acts) == {act} else acts, pool=b.pool)
        return dataclasses.replace(b, kernels=kernels, split=split, expand_channels=sum(split),
                                   acts=None if set(acts) == {b.act} else acts)

    def derive(self, arch, *, name: str = "fgnas_derived", provenance: Provenance | None = None) -> ModelSpec:
        """The zoo spec of ``arch`` (see the module docstring)."""
        arch = self.check_arch(arch)
        by_name = {layer.name: (layer, a) for layer, a in zip(self.layers(), arch)}
        stages = []
        for i, stage in enumerate(self.backbone.stages):
            blocks = []
            for j, b in enumerate(stage):
                hit = by_name.get(f"s{i}_b{j}")
                blocks.append(b if hit is None else self.derive_block(*hit))
            stages.append(tuple(blocks))
        return dataclasses.replace(self.backbone, name=name, stages=tuple(stages),
                                   provenance=provenance or Provenance(method="fgnas"))

    def cost(self, arch, resource: str = "macs") -> int:
        """Exact params or MACs of the derived model of ``arch``."""
        c = count(self.derive(arch))
        return c.params if resource == "params" else c.macs

    def cost_terms(self, resource: str = "macs"):
        """Per searched layer ``(a, b)`` arrays over its operations such that the layer's variable cost is
        ``Σ_i γ_out,i · (a_i + b_i · γ_in)`` (``b = 0`` unless the layer is chained), plus the head's coefficient on
        the last layer's deployed width and the constant rest, so that the total is exact for hard gates."""
        space, spec = self, self.backbone
        sites = {s.name: s for s in walk(spec).blocks}
        terms = []
        for layer in self.layers():
            s, b = sites[layer.name], layer.site.block
            n_out = -(-s.in_size // b.stride)
            a, bb = [], []
            for k, act in space.ops:
                extra = 1 if act == "prelu" else 0
                if layer.kind == "conv":
                    per_in = (n_out * n_out * k * k) if resource == "macs" else k * k
                    own = 0 if resource == "macs" else 2 + extra
                else:  # expansion row + its BN, depthwise + BN (+ PReLU), projection column
                    per_in = s.in_size * s.in_size if resource == "macs" else 1
                    own = (k * k * n_out * n_out + b.filters * n_out * n_out if resource == "macs"
                           else 2 + k * k + 2 + extra + b.filters)
                if layer.chained:
                    a.append(own)
                    bb.append(per_in)
                else:
                    a.append(own + per_in * s.in_ch)
                    bb.append(0)
            terms.append((np.array(a, np.float64), np.array(bb, np.float64)))
        # The head reads the last searched layer's deployed width when that layer is the last block.
        w = walk(spec)
        head_coef = 0.0
        last = self.layers()[-1]
        if last.kind == "conv" and last.name == w.blocks[-1].name:
            h = spec.head
            if h.filters is not None:
                head_coef = w.head.in_size ** 2 * h.filters if resource == "macs" else h.filters
            else:
                head_coef = float(h.classes)
        full = space.full_arch()
        variable = self.variable_cost(terms, head_coef, full)
        fixed = space.cost(full, resource) - variable
        return terms, head_coef, fixed

    def variable_cost(self, terms, head_coef, arch) -> float:
        """The gate-dependent part of the resource of ``arch`` for :meth:`cost_terms`' coefficients."""
        total, prev = 0.0, None
        for layer, (a, b), g in zip(self.layers(), terms, arch):
            gamma = np.asarray(g, np.float64).sum(axis=1)
            gin = prev if layer.chained else 0.0
            total += float(np.sum(gamma * (a + b * gin)))
            prev = float(gamma.sum()) if layer.kind == "conv" else None
        return total + head_coef * (prev or 0.0)

    def summary(self, arch) -> list[dict]:
        """Per searched layer: channels kept, pruned, compositional (≥ 2 operations), the deployed width, channels per
        operation (``per_op``) and channels by the number of operations they use (``ops_per_channel[n]``)."""
        rows = []
        for layer, a in zip(self.layers(), self.check_arch(arch)):
            per_channel = a.sum(axis=0)
            rows.append({"layer": layer.name, "kind": layer.kind, "channels": layer.channels,
                         "kept": int((per_channel > 0).sum()), "pruned": int((per_channel == 0).sum()),
                         "compositional": int((per_channel > 1).sum()), "deployed_width": int(a.sum()),
                         "per_op": {f"{k}x{k}/{act}": int(n) for (k, act), n in zip(self.ops, a.sum(axis=1))},
                         "ops_per_channel": np.bincount(per_channel, minlength=len(self.ops) + 1).tolist()})
        return rows


def _plain_spec(name, family, size, stem_filters, stages, classes, provenance_notes):
    return ModelSpec(name=name, family=family, input=InputSpec(size=size, channels=3, mean=(125.3, 123.0, 113.9),
                                                                std=(63.0, 62.1, 66.7)),
                     stem=StemSpec(filters=stem_filters, kernel=3, stride=1, act="relu"), stages=stages,
                     head=HeadSpec(filters=None, act="relu", dropout=0.0, classes=classes), bn=BNSpec(),
                     padding="same", provenance=Provenance(method="fgnas_backbone", notes=provenance_notes))


def vgg_space(width: int = 12, kernels=(3,), acts=("relu",), classes: int = 10, input_size: int = 32,
              pool: str = "avg") -> FgnasSpace:
    """A small VGG-style backbone for CIFAR (paper Table 5 / Fig. 5 at CPU scale): a 3×3 stem conv of ``width``,
    then conv blocks ``[w pool] [2w, 2w pool] [4w, 4w pool] [8w, 8w]`` (3×3, ReLU), global pooling and the
    classifier. ``width=12`` is 7.6M MACs at 32×32. Pools are 2×2 averages: linear, so a channel that sums several
    operations folds into the next conv exactly (a max pool would not)."""
    w = int(width)
    if w < 1:
        raise ValueError(f"width: must be >= 1, got {width}")

    def conv(c, p=None):
        return ConvSpec(kernels=(3,), split=(c,), filters=c, stride=1, act="relu", pool=p)
    stages = ((conv(w, pool),), (conv(2 * w), conv(2 * w, pool)), (conv(4 * w), conv(4 * w, pool)),
              (conv(8 * w), conv(8 * w)))
    spec = _plain_spec(f"fgnas_vgg_w{w}", "plain", input_size, w, stages, classes,
                       f"VGG-style FGNAS backbone, width {w}, {pool} pooling")
    return FgnasSpace(spec, kernels, acts)


def mbconv_space(kernels=(3,), acts=("relu6",), expand: int = 6, classes: int = 10, input_size: int = 32,
                 widths=(16, 24, 32, 64, 96), depths=(1, 2, 2, 2, 1), strides=(1, 1, 2, 2, 1),
                 width_mult: float = 1.0) -> FgnasSpace:
    """A MobileNetV2-style CIFAR backbone: 3×3 stem (32), a first block without expansion (fixed), then ir blocks
    (expansion ``expand``, 3×3 depthwise, ReLU6) whose expanded channels are searched; no head conv.
    ``width_mult`` scales the stem and every block width as MobileNetV2's multiplier does (multiples of 8)."""
    if width_mult <= 0:
        raise ValueError(f"width_mult: must be positive, got {width_mult}")
    scale = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    widths = tuple(scale(c) for c in widths)
    stages, ch = [], scale(32)
    stem = ch
    for i, (c, d, s) in enumerate(zip(widths, depths, strides)):
        blocks = []
        for j in range(d):
            e = None if i == 0 else ch * expand
            blocks.append(MBConvSpec(kernels=(3,), split=(e or ch,), expand_channels=e, filters=c,
                                     stride=s if j == 0 else 1, act="relu6"))
            ch = c
        stages.append(tuple(blocks))
    name = "fgnas_mbconv" if width_mult == 1.0 else f"fgnas_mbconv_x{width_mult:g}".replace(".", "p")
    spec = _plain_spec(name, "mbconv", input_size, stem, tuple(stages), classes,
                       f"MobileNetV2-style FGNAS backbone, expansion {expand}"
                       + ("" if width_mult == 1.0 else f", width multiplier {width_mult:g}"))
    return FgnasSpace(spec, kernels, acts)


SPACES = {"vgg": vgg_space, "mbconv": mbconv_space}
