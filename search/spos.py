"""Single Path One-Shot (Guo et al. 2019): the search space, architectures as data, costs and constraints (this
module, TensorFlow-free); the weight-sharing supernet that runs exactly one path per step is
:mod:`search.spos_net`, its training and candidate evaluation :mod:`search.spos_train`.

Search space (paper Table 2): stem conv 3×3 → stages of ShuffleNetV2 choice blocks (first block of each stage stride
2) → 1×1 conv → GAP → FC. Every choice block has three independent choices:

- **block choice** — ``choice_3``, ``choice_5``, ``choice_7`` (1×1 → depthwise k×k → 1×1 in the main branch) or
  ``choice_x`` (three depthwise-3×3 → 1×1 units, Xception-like). Each has its own weights.
- **channel choice** (Fig. 4) — the main branch's inner width ``mid = round(ratio · filters/2)`` for ``ratio`` in
  ``space.channel_ratios`` (paper: 0.2 … 1.6). Weights are allocated at the largest width and sliced
  (``W[:, :, :c_in, :c_out]``), so every width shares the leading channels.
- **bit widths** (Fig. 5) — ``(w, a)`` from ``space.bits``: weights fake-quantized DoReFa-style, activations with
  PACT (learnable clip α per block) at every conv input of the block. Empty ``space.bits`` = full precision.

An architecture is an int array ``(n_blocks, 3)`` of ``(choice index, ratio index, bits index)``; ``key(arch)`` is its
hashable string. The supernet takes the architecture as a *tensor* input: one traced graph serves every path, each
block selects its branch with ``tf.switch_case`` (only that branch executes, so only its variables get gradients)
and slices its weights to the sampled width. BatchNorm statistics are kept per branch at full width and sliced the
same way; ``mode="recal"`` replaces them by the exact mean over the batches seen since
:meth:`search.spos_net.SposSupernet.reset_recal`
(the paper's BN recalibration before evaluating a candidate).

Padding follows PyTorch (``padding: symmetric`` in the spec): every k×k conv pads k//2 on each side. The derived
model (:func:`arch_spec` → ``models.builder``) is plain stock layers; the supernet
(:class:`search.spos_net.SposSupernet`, a :class:`search.protocol.Supernet`) slices its weights into it by the
builder's layer names.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from common.errors import InputError
from models import spec as S
from models.counting import bitops, count

PAPER_RATIOS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
PAPER_BITS = ((1, 2), (2, 2), (1, 4), (2, 4), (3, 4), (4, 4))
CHOICES = S.SHUFFLE_CHOICES  # ("3", "5", "7", "x")
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SposSpace:
    """A SPOS macro space. ``stage_blocks``/``stage_channels`` per stage; ``channel_ratios`` (1.0 must be one of
    them when it is the only one) and ``bits`` (empty = full precision) are the per-block choice sets."""
    input_size: int
    stem_filters: int
    stem_stride: int
    stage_blocks: tuple[int, ...]
    stage_channels: tuple[int, ...]
    head_filters: int
    classes: int
    choices: tuple[str, ...] = CHOICES
    channel_ratios: tuple[float, ...] = (1.0,)
    bits: tuple[tuple[int, int], ...] = ()
    dropout: float = 0.1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    def __post_init__(self):
        if len(self.stage_blocks) != len(self.stage_channels) or not self.stage_blocks:
            raise ValueError("stage_blocks and stage_channels need the same non-zero length")
        bad = [c for c in self.choices if c not in CHOICES]
        if bad or len(set(self.choices)) != len(self.choices) or not self.choices:
            raise ValueError(f"choices must be distinct values of {CHOICES}, got {self.choices}")
        if not self.channel_ratios or any(r <= 0 for r in self.channel_ratios):
            raise ValueError(f"channel_ratios must be positive, got {self.channel_ratios}")
        for w, a in self.bits:
            if w not in S.WEIGHT_BITS or a not in S.ACTIVATION_BITS:
                raise ValueError(f"bit widths: w 1..8 or 32 (float), a 1..8, 16 or 32 (float); got {(w, a)}")
        prev = self.stem_filters
        for c in self.stage_channels:
            if c % 2 or c <= prev:
                raise ValueError(f"stage channels must be even and grow (stride-2 shuffle units widen): {c} after "
                                 f"{prev}")
            prev = c

    @property
    def quantized(self) -> bool:
        return bool(self.bits)

    def blocks(self) -> list[tuple[int, int, int, int, int]]:
        """``(stage, index, in_channels, out_channels, stride)`` of every choice block, in order."""
        out, ch = [], self.stem_filters
        for i, (n, c) in enumerate(zip(self.stage_blocks, self.stage_channels)):
            for j in range(n):
                out.append((i, j, ch, c, 2 if j == 0 else 1))
                ch = c
        return out

    @property
    def n_blocks(self) -> int:
        return sum(self.stage_blocks)

    def mid_channels(self, out_channels: int, ratio: float) -> int:
        return max(1, int(round(ratio * (out_channels // 2))))

    def max_mid(self, out_channels: int) -> int:
        return max(self.mid_channels(out_channels, r) for r in self.channel_ratios)

    def sizes(self) -> tuple[int, int, int]:
        """Number of options per block: (block choices, channel ratios, bit widths)."""
        return len(self.choices), len(self.channel_ratios), max(1, len(self.bits))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(obj: dict) -> "SposSpace":
        fields = {f.name for f in dataclasses.fields(SposSpace)}
        kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
              for k, v in obj.items() if k in fields}
        return SposSpace(**kw)


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def imagenet_space(channel_ratios=(1.0,), bits=(), choices=CHOICES) -> SposSpace:
    """Paper Table 2 at 224×224: stem 16 (stride 2), 4/4/8/4 blocks of 64/160/320/640, 1×1 conv 1024, 1000 classes."""
    return SposSpace(224, 16, 2, (4, 4, 8, 4), (64, 160, 320, 640), 1024, 1000, choices=tuple(choices),
                     channel_ratios=tuple(channel_ratios), bits=tuple(bits))


def cifar_space(width: float = 0.25, depth: tuple[int, ...] = (4, 4, 8, 4), classes: int = 10,
                channel_ratios=(1.0,), bits=(), input_size: int = 32, choices=CHOICES) -> SposSpace:
    """The Table 2 layout at CIFAR scale: stride-1 stem, channels × ``width``, ``depth`` blocks per stage."""
    channels = tuple(_even(c * width) for c in (64, 160, 320, 640))
    stem = min(16, _even(channels[0] / 2))
    return SposSpace(input_size, stem, 1, tuple(depth), channels, _even(1024 * width), classes, choices=tuple(choices),
                     channel_ratios=tuple(channel_ratios), bits=tuple(bits))


# ---------------------------------------------------------------------------------------------------------------------
# Architectures as data


def key(arch) -> str:
    """Hashable text form: ``"c.r.q-c.r.q-…"``."""
    return "-".join(".".join(str(int(v)) for v in row) for row in np.asarray(arch).reshape(-1, 3))


def from_key(text: str) -> np.ndarray:
    return np.array([[int(v) for v in row.split(".")] for row in text.split("-")], dtype=np.int32)


def validate_arch(space: SposSpace, arch) -> np.ndarray:
    a = np.asarray(arch, dtype=np.int32)
    if a.shape != (space.n_blocks, 3):
        raise ValueError(f"an architecture of this space has shape ({space.n_blocks}, 3), got {a.shape}")
    hi = np.array(space.sizes())
    if (a < 0).any() or (a >= hi).any():
        raise ValueError(f"architecture {key(a)} has an option index outside {tuple(hi)}")
    return a


def uniform(space: SposSpace, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Uniform single-path sample (all three choices independent and uniform per block)."""
    hi = np.array(space.sizes())
    shape = (space.n_blocks, 3) if n is None else (n, space.n_blocks, 3)
    return (rng.random(shape) * hi).astype(np.int32)


def fix(arch: np.ndarray, fixed: dict | None) -> np.ndarray:
    """``arch`` with each field ``f`` of ``fixed`` (0 block choice, 1 channel ratio, 2 bits) set to option ``v`` in
    every block, or, when ``v`` is a list, to ``v[i]`` in block ``i`` (in place; returned)."""
    for f, v in (fixed or {}).items():
        arch[..., f] = np.asarray(v, dtype=arch.dtype)
    return arch


def cover(space: SposSpace) -> list[np.ndarray]:
    """One path per (block choice, channel ratio) with every block at it (bits index 0). A block's latency-table key
    depends only on its own choice and width, so these paths hold every block configuration of the space: a latency
    table built from them has an entry for every block of every path."""
    out = []
    for c in range(len(space.choices)):
        for r in range(len(space.channel_ratios)):
            arch = np.zeros((space.n_blocks, 3), np.int32)
            arch[:, 0], arch[:, 1] = c, r
            out.append(arch)
    return out


def largest(space: SposSpace) -> np.ndarray:
    """The path with the most MACs: per block the costliest choice, the widest ratio, the highest bit widths."""
    return _extreme(space, max)


def smallest(space: SposSpace) -> np.ndarray:
    """The path with the fewest MACs (used to explain infeasible constraints)."""
    return _extreme(space, min)


def _extreme(space: SposSpace, pick) -> np.ndarray:
    arch = np.zeros((space.n_blocks, 3), np.int32)
    arch[:, 1] = space.channel_ratios.index(pick(space.channel_ratios))
    if space.bits:
        prods = [w * a for w, a in space.bits]
        arch[:, 2] = prods.index(pick(prods))
    for b in range(space.n_blocks):  # MACs are additive over blocks: choose each block on its own
        def macs(c, b=b):
            a = arch.copy()
            a[b, 0] = c
            return cost(space, a)["macs"]
        arch[b, 0] = pick(range(len(space.choices)), key=macs)
    return arch


def block_spec(space: SposSpace, site: tuple[int, int, int, int, int], row) -> S.ShuffleSpec:
    """The zoo block spec of one choice row ``(choice, ratio index, bits index)`` at ``site`` (an entry of
    :meth:`SposSpace.blocks`); bit widths recorded when the space has them."""
    _, _, _, out, stride = site
    c, r, q = (int(v) for v in row)
    bits = S.BitsSpec(*space.bits[q]) if space.bits else None
    return S.ShuffleSpec(choice=space.choices[c], filters=out,
                         mid_channels=space.mid_channels(out, space.channel_ratios[r]), stride=stride, act="relu",
                         bits=bits)


def assemble(space: SposSpace, blocks, name: str = "spos_derived",
             provenance: S.Provenance | None = None) -> S.ModelSpec:
    """The space's zoo spec (family ``shufflenet``) around ``blocks`` (one block spec per choice block, in order)."""
    blocks, stages = list(blocks), []
    for n in space.stage_blocks:
        stages.append(tuple(blocks[:n]))
        blocks = blocks[n:]
    return S.ModelSpec(
        name=name, family="shufflenet",
        input=S.InputSpec(space.input_size, 3, tuple(space.mean), tuple(space.std)),
        stem=S.StemSpec(space.stem_filters, 3, space.stem_stride, "relu"),
        stages=tuple(stages),
        head=S.HeadSpec(space.head_filters, "relu", space.dropout, space.classes, bias=False),
        bn=S.BNSpec(eps=space.bn_eps, momentum=space.bn_momentum), padding="symmetric",
        provenance=provenance or S.Provenance(method="spos"))


def arch_spec(space: SposSpace, arch, name: str = "spos_derived",
              provenance: S.Provenance | None = None) -> S.ModelSpec:
    """The zoo spec of one path (TensorFlow-free; the supernet's ``derive`` gives the same spec)."""
    a = validate_arch(space, arch)
    return assemble(space, (block_spec(space, site, row) for site, row in zip(space.blocks(), a)), name, provenance)


@functools.lru_cache(maxsize=200_000)
def _cost(space: SposSpace, text: str) -> tuple[int, int, int]:
    spec = arch_spec(space, from_key(text))
    c = count(spec)
    return c.macs, c.params, bitops(spec)[0]


def cost(space: SposSpace, arch, latency=None) -> dict:
    """``{"macs", "params", "bitops"}`` of a path, plus ``"latency_ms"`` when a latency model
    (an object with ``predict(spec) -> ms``, e.g. :class:`search.latency.LatencyTable`) is given."""
    macs, params, bops = _cost(space, key(arch))
    out = {"macs": macs, "params": params, "bitops": bops}
    if latency is not None:
        out["latency_ms"] = float(latency.predict(arch_spec(space, arch)))
    return out


@dataclass(frozen=True)
class Constraints:
    """Hard upper limits; ``None`` = unconstrained. Any combination may be set."""
    max_macs: float | None = None
    max_params: float | None = None
    max_bitops: float | None = None
    max_latency_ms: float | None = None

    def limits(self) -> dict:
        return {k: v for k, v in (("macs", self.max_macs), ("params", self.max_params),
                                  ("bitops", self.max_bitops), ("latency_ms", self.max_latency_ms)) if v is not None}

    def ok(self, c: dict) -> bool:
        return all(c[k] <= v for k, v in self.limits().items())


class ConstraintError(InputError):
    """No path satisfying the constraints was found."""


def sample(space: SposSpace, rng: np.random.Generator, constraints: Constraints | None = None, latency=None,
           max_tries: int = 10_000, fixed: dict[int, int] | None = None) -> np.ndarray:
    """Uniform *constraint* sampling: draw uniform paths until one satisfies ``constraints`` (paper's default);
    ``fixed``: fields held at one option (`fix`).

    Raises:
        ConstraintError: at once when even the path with the fewest MACs exceeds ``max_macs`` (no path can meet
            it), else after ``max_tries`` draws without a feasible path.
    """
    if constraints is not None and constraints.max_macs is not None:
        least = cost(space, smallest(space))
        if least["macs"] > constraints.max_macs:
            raise ConstraintError(f"no path within {constraints.limits()}: the space's smallest path costs {least}")
    for _ in range(max_tries):
        a = fix(uniform(space, rng), fixed)
        if constraints is None or constraints.ok(cost(space, a, latency)):
            return a
    raise ConstraintError(f"no path within {constraints.limits()} in {max_tries} uniform draws; "
                          f"the space's smallest path costs {cost(space, smallest(space))}")

