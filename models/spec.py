"""Architecture specs: strict decode of zoo JSON into frozen dataclasses, and encode back.

A spec is data (DESIGN.md §3): stem → stages of blocks → head, with preprocessing, BatchNorm settings, padding style
and provenance. ``decode`` validates every field (types, ranges, channel arithmetic between consecutive blocks) and
raises :class:`SpecError` naming the offending path, e.g. ``stages[2][0].kernels``. ``encode`` writes the canonical
form (every field explicit), so ``decode(encode(s)) == s`` and ``encode(decode(d))`` is a fixed point.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Union

from common.errors import InputError

SCHEMA_VERSION = 1
ACTIVATIONS = ("relu", "relu6", "swish", "hswish")
# Per-branch activations (``acts`` of ir/conv blocks, a conv block's ``act``): FGNAS searches ReLU, PReLU and tanh
# per channel. PReLU has one learned slope per channel (shared over height and width).
BRANCH_ACTIVATIONS = ACTIVATIONS + ("tanh", "prelu")
FAMILIES = ("mbconv", "shufflenet", "plain")
POOLS = ("max", "avg")
PADDINGS = ("same", "symmetric")
SHUFFLE_CHOICES = ("3", "5", "7", "x")
MAX_KERNEL = 31  # largest depthwise kernel a spec may hold (the schema's "kernel" maximum)
MAX_CHANNELS = 65536  # widest layer a spec may describe (the schema's "channels" maximum)
BORDERS = ("mean", "black")  # InputSpec.border
STD_MIN, STAT_MAX = 1e-6, 1e6  # input.std ≥ STD_MIN; |input.mean|, input.std ≤ STAT_MAX
MAX_INPUT_SIZE = 4096  # largest square input (the schema's "size" maximum)
MAX_CLASSES = 100000  # largest classifier (ImageNet-21k has 21,843 classes)
# Model names: lower-case letters, digits, "_", ".", "-", at most 100 characters (they become file names). Match with
# ``NAME_RE.fullmatch``. The same pattern is the JSON schema's, which validators apply with a search: ``$`` would also
# match before a final newline there, so the pattern ends in ``(?![\s\S])`` (the end of the text, in Python and ECMA).
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,99}(?![\s\S])")


class SpecError(InputError):
    """A spec is malformed. ``path`` locates the field (``stages[2][0].kernels``)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


@dataclass(frozen=True)
class InputSpec:
    """The image the network reads: raw pixels, normalised ``(x − mean) / std`` per channel inside the model.

    ``border``: what the stem conv sees beyond the image edge. ``"mean"`` (default; keras.applications, timm and
    torchvision models): normalised zeros, i.e. raw pixels equal to the mean. ``"black"``: raw 0 pixels (normalised
    ``−mean / std``). Either trains equally well; they differ on the stem's border outputs only. A ``"black"`` network
    deploys with the normalisation folded into the stem conv and **no added op** (`export.fold`), exactly; a
    ``"mean"`` one with per-image border padding in front of the stem (one ``PAD``/``PADV2``, + ``ADD`` for
    per-channel means)."""
    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    border: str = "mean"


@dataclass(frozen=True)
class StemSpec:
    filters: int
    kernel: int
    stride: int
    act: str
    pool: bool = False  # 3×3 stride-2 max pool after the stem conv (ShuffleNetV2)
    depthwise: bool = False  # E-DNAS: a depthwise k×k conv on the image, depth multiplier filters / channels


@dataclass(frozen=True)
class BitsSpec:
    """SPOS bit widths of a block: weights ``w`` 1–8 or 32 (float), activations ``a`` 1–8, 16 or 32 (float); float
    builds ignore them, ``export_tflite --mode=mixed`` deploys them (``export.mixed_precision.precision_of``)."""
    w: int
    a: int


WEIGHT_BITS, ACTIVATION_BITS = (*range(1, 9), 32), (*range(1, 9), 16, 32)


@dataclass(frozen=True)
class MBConvSpec:
    """Inverted residual (MBConv) with one or several depthwise kernel sizes.

    ``expand_channels`` is the explicit expanded width (``None``: no 1×1 expansion, the depthwise conv runs on the
    block input, as in MobileNetV2's first block). ``split[i]`` filters use ``kernels[i]``; ``sum(split)`` equals the
    expanded width. ``se_channels`` is the squeeze width of squeeze-excite (0: none). A residual is added when
    ``skip`` and the shapes allow it (stride 1, same width). ``acts`` (``None``: ``act`` everywhere) gives each
    branch's depthwise activation (FGNAS operations); the expansion and SE keep ``act``. With ``acts`` two branches may
    share a kernel size, never a (kernel, activation) pair.
    """
    kernels: tuple[int, ...]
    split: tuple[int, ...]
    expand_channels: int | None
    filters: int
    stride: int
    act: str
    se_channels: int = 0
    expand_groups: int = 1
    project_groups: int = 1
    skip: bool = True
    bits: BitsSpec | None = None
    acts: tuple[str, ...] | None = None
    block: str = "ir"

    def branch_acts(self) -> tuple[str, ...]:
        """The depthwise activation of each branch."""
        return self.acts if self.acts is not None else (self.act,) * len(self.kernels)


@dataclass(frozen=True)
class ShuffleSpec:
    """ShuffleNetV2 unit with the SPOS choices ``3``/``5``/``7`` (kernel size) and ``x`` (Xception-like).

    Stride 1: the input's even channels pass through, the odd ones go through the main branch (``filters/2`` out).
    Stride 2: both branches see the whole input; the projection branch keeps the input width and the main branch
    outputs ``filters - in_channels``. ``mid_channels`` is the main branch's inner width (SPOS channel search).
    """
    choice: str
    filters: int
    mid_channels: int
    stride: int
    act: str = "relu"
    bits: BitsSpec | None = None
    block: str = "shuffle"


@dataclass(frozen=True)
class ConvSpec:
    """Plain convolution block (VGG style; FGNAS's searched layers): per branch a k×k conv → BN → activation, the
    branches concatenated (``split[i]`` filters use ``kernels[i]`` and ``acts[i]``, ``sum(split) == filters``), then
    an optional 2×2 stride-2 ``pool`` (``"max"`` or ``"avg"``, "same" padding). Two branches may share a kernel size
    when their activations differ. No residual.
    """
    kernels: tuple[int, ...]
    split: tuple[int, ...]
    filters: int
    stride: int
    act: str
    acts: tuple[str, ...] | None = None
    pool: str | None = None
    block: str = "conv"

    def branch_acts(self) -> tuple[str, ...]:
        """The activation of each branch."""
        return self.acts if self.acts is not None else (self.act,) * len(self.kernels)


BlockSpec = Union[MBConvSpec, ShuffleSpec, ConvSpec]


@dataclass(frozen=True)
class HeadSpec:
    filters: int | None  # 1×1 conv before pooling (None: none)
    act: str
    dropout: float
    classes: int
    bias: bool = True  # classifier bias


@dataclass(frozen=True)
class BNSpec:
    eps: float = 1e-3
    momentum: float = 0.99  # Keras convention: moving = momentum * moving + (1 - momentum) * batch


@dataclass(frozen=True)
class Provenance:
    method: str
    source: str | None = None
    target: float | None = None
    target_macs: int | None = None
    seed: int | None = None
    data: str | None = None
    notes: str | None = None
    metrics: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    input: InputSpec
    stem: StemSpec
    stages: tuple[tuple[BlockSpec, ...], ...]
    head: HeadSpec
    bn: BNSpec = BNSpec()
    padding: str = "same"
    provenance: Provenance = Provenance(method="reference")
    schema_version: int = SCHEMA_VERSION

    def blocks(self):
        """Yields ``(stage_index, block_index, block)`` in order."""
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                yield i, j, block


# ---------------------------------------------------------------------------------------------------------------------
# Field readers: each names the path on failure.

class _Reader:
    def __init__(self, obj: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...]):
        if not isinstance(obj, dict):
            raise SpecError(path, f"must be an object, got {type(obj).__name__}")
        for key in obj:
            if key not in allowed:
                raise SpecError(_join(path, str(key)), f"unknown key (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in obj:
                raise SpecError(_join(path, key), "missing required key")
        self.obj, self.path = obj, path

    def has(self, key):
        return key in self.obj

    def p(self, key):
        return _join(self.path, key)

    def int(self, key, lo=None, hi=None, default=dataclasses.MISSING, nullable=False):
        if key not in self.obj:
            return default
        return _int(self.obj[key], self.p(key), lo, hi, nullable)

    def float(self, key, lo=None, hi=None, default=dataclasses.MISSING, nullable=False, lo_open=False):
        if key not in self.obj:
            return default
        return _float(self.obj[key], self.p(key), lo, hi, nullable, lo_open)

    def bool(self, key, default=dataclasses.MISSING):
        if key not in self.obj:
            return default
        v = self.obj[key]
        if not isinstance(v, bool):
            raise SpecError(self.p(key), f"must be true or false, got {v!r}")
        return v

    def str(self, key, choices=None, default=dataclasses.MISSING, nullable=False):
        if key not in self.obj:
            return default
        v = self.obj[key]
        if v is None and nullable:
            return None
        if not isinstance(v, str):
            raise SpecError(self.p(key), f"must be a string, got {v!r}")
        if choices is not None and v not in choices:
            raise SpecError(self.p(key), f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def int_list(self, key, lo=1, hi=None):
        v = self.obj[key]
        if not isinstance(v, list) or not v:
            raise SpecError(self.p(key), f"must be a non-empty list of integers, got {v!r}")
        return tuple(_int(x, f"{self.p(key)}[{i}]", lo, hi) for i, x in enumerate(v))


def _join(path, key):
    return f"{path}.{key}" if path else key


def _float(v, path, lo=None, hi=None, nullable=False, lo_open=False):
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SpecError(path, f"must be a finite number, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise SpecError(path, f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise SpecError(path, f"must be <= {hi}, got {v!r}")
    return float(v)


def _int(v, path, lo=None, hi=None, nullable=False):
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(path, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise SpecError(path, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise SpecError(path, f"must be <= {hi}, got {v}")
    return v


def _bits(r: _Reader):
    if not r.has("bits") or r.obj["bits"] is None:
        return None
    b = _Reader(r.obj["bits"], r.p("bits"), ("w", "a"), ("w", "a"))
    w, a = b.int("w", 1, 32), b.int("a", 1, 32)
    if w not in WEIGHT_BITS or a not in ACTIVATION_BITS:
        raise SpecError(b.p("w" if w not in WEIGHT_BITS else "a"), f"w 1–8 or 32 (float), a 1–8, 16 or 32, got {w}:{a}")
    return BitsSpec(w=w, a=a)


def _decode_mbconv(obj, path, in_ch: int) -> MBConvSpec:
    keys = ("block", "kernels", "split", "expand_channels", "filters", "stride", "act", "se_channels",
            "expand_groups", "project_groups", "skip", "bits", "acts")
    r = _Reader(obj, path, keys, ("block", "kernels", "expand_channels", "filters", "stride", "act"))
    kernels, acts = _kernels_acts(r)
    expand = r.int("expand_channels", 1, MAX_CHANNELS, nullable=True)
    mid = in_ch if expand is None else expand
    if r.has("split"):
        split = r.int_list("split", 1, MAX_CHANNELS)
    elif len(kernels) == 1:
        split = (mid,)
    else:
        raise SpecError(r.p("split"), "required when there are several kernel sizes")
    if len(split) != len(kernels):
        raise SpecError(r.p("split"), f"needs one count per kernel size ({len(kernels)}), got {len(split)}")
    if sum(split) != mid:
        what = "expand_channels" if expand is not None else "the block's input channels (no expansion)"
        raise SpecError(r.p("split"), f"sums to {sum(split)} but {what} is {mid}")
    if expand is None and len(kernels) > 1:
        # Without an expansion conv the branch form (DESIGN.md §3) has nothing to split by; a split of the block input
        # would need channel slicing, which breaks QAT. Such blocks keep one kernel size.
        raise SpecError(r.p("kernels"), "a block without expansion (expand_channels null) takes one kernel size")
    eg = r.int("expand_groups", 1, MAX_CHANNELS, default=1)
    pg = r.int("project_groups", 1, MAX_CHANNELS, default=1)
    filters = r.int("filters", 1, MAX_CHANNELS)
    if eg > 1:
        if expand is None:
            raise SpecError(r.p("expand_groups"), "needs an expansion conv (expand_channels is null)")
        for name, n in [("input channels", in_ch)] + [(f"split[{i}]", s) for i, s in enumerate(split)]:
            if n % eg:
                raise SpecError(r.p("expand_groups"), f"{eg} groups do not divide {name} ({n})")
    if pg > 1 and (mid % pg or filters % pg):
        raise SpecError(r.p("project_groups"), f"{pg} groups must divide both {mid} and {filters} channels")
    return MBConvSpec(kernels=kernels, split=split, expand_channels=expand, filters=filters,
                      stride=r.int("stride", 1, 2), act=r.str("act", ACTIVATIONS),
                      se_channels=r.int("se_channels", 0, MAX_CHANNELS, default=0), expand_groups=eg, project_groups=pg,
                      skip=r.bool("skip", default=True), bits=_bits(r), acts=acts)


def _kernels_acts(r: _Reader):
    """``kernels`` (odd, <= MAX_KERNEL) and the optional per-branch ``acts``; (kernel, act) pairs distinct."""
    kernels = r.int_list("kernels")
    for i, k in enumerate(kernels):
        if k % 2 == 0 or k > MAX_KERNEL:
            raise SpecError(f"{r.p('kernels')}[{i}]", f"kernel sizes must be odd and <= {MAX_KERNEL}, got {k}")
    acts = None
    if r.has("acts") and r.obj["acts"] is not None:
        v = r.obj["acts"]
        if not isinstance(v, list) or len(v) != len(kernels):
            raise SpecError(r.p("acts"), f"must be null or a list of {len(kernels)} activations (one per kernel), "
                                         f"got {v!r}")
        for i, a in enumerate(v):
            if a not in BRANCH_ACTIVATIONS:
                raise SpecError(f"{r.p('acts')}[{i}]", f"must be one of {', '.join(BRANCH_ACTIVATIONS)}; got {a!r}")
        acts = tuple(v)
        pairs = list(zip(kernels, acts))
        if len(set(pairs)) != len(pairs):
            raise SpecError(r.p("kernels"), f"(kernel, activation) pairs must be distinct, got {pairs}")
    elif len(set(kernels)) != len(kernels):
        raise SpecError(r.p("kernels"), f"kernel sizes must be distinct, got {list(kernels)}")
    return kernels, acts


def _decode_conv(obj, path, in_ch: int) -> ConvSpec:
    keys = ("block", "kernels", "split", "filters", "stride", "act", "acts", "pool")
    r = _Reader(obj, path, keys, ("block", "kernels", "filters", "stride", "act"))
    kernels, acts = _kernels_acts(r)
    filters = r.int("filters", 1, MAX_CHANNELS)
    if r.has("split"):
        split = r.int_list("split", 1, MAX_CHANNELS)
    elif len(kernels) == 1:
        split = (filters,)
    else:
        raise SpecError(r.p("split"), "required when there are several branches")
    if len(split) != len(kernels):
        raise SpecError(r.p("split"), f"needs one count per kernel ({len(kernels)}), got {len(split)}")
    if sum(split) != filters:
        raise SpecError(r.p("split"), f"sums to {sum(split)} but filters is {filters}")
    return ConvSpec(kernels=kernels, split=split, filters=filters, stride=r.int("stride", 1, 2),
                    act=r.str("act", BRANCH_ACTIVATIONS), acts=acts, pool=r.str("pool", POOLS, default=None,
                                                                                  nullable=True))


def _decode_shuffle(obj, path, in_ch: int) -> ShuffleSpec:
    keys = ("block", "choice", "filters", "mid_channels", "stride", "act", "bits")
    r = _Reader(obj, path, keys, ("block", "choice", "filters", "mid_channels", "stride"))
    filters, stride = r.int("filters", 2, MAX_CHANNELS), r.int("stride", 1, 2)
    if stride == 1 and (filters != in_ch or in_ch % 2):
        raise SpecError(r.p("filters"), f"a stride-1 shuffle unit keeps an even width: input {in_ch}, got {filters}")
    if stride == 2 and filters <= in_ch:
        raise SpecError(r.p("filters"), f"a stride-2 shuffle unit must widen its input ({in_ch}), got {filters}")
    return ShuffleSpec(choice=r.str("choice", SHUFFLE_CHOICES), filters=filters,
                       mid_channels=r.int("mid_channels", 1, MAX_CHANNELS), stride=stride,
                       act=r.str("act", ACTIVATIONS, default="relu"), bits=_bits(r))


def _decode_block(obj, path, in_ch):
    if not isinstance(obj, dict):
        raise SpecError(path, f"must be an object, got {type(obj).__name__}")
    kind = obj.get("block")
    if kind == "ir":
        return _decode_mbconv(obj, path, in_ch)
    if kind == "shuffle":
        return _decode_shuffle(obj, path, in_ch)
    if kind == "conv":
        return _decode_conv(obj, path, in_ch)
    raise SpecError(_join(path, "block"), f"must be 'ir', 'shuffle' or 'conv', got {kind!r}")


def decode(obj: Any) -> ModelSpec:
    """Validates a spec dict (parsed JSON) and returns a frozen :class:`ModelSpec`.

    Raises:
        SpecError: on any unknown key, missing key, bad value or inconsistent channel count, naming the path.
    """
    top = ("schema_version", "name", "family", "input", "stem", "stages", "head", "bn", "padding", "provenance")
    r = _Reader(obj, "", top, ("schema_version", "name", "family", "input", "stem", "stages", "head"))
    version = r.int("schema_version")
    if version != SCHEMA_VERSION:
        raise SpecError("schema_version", f"unsupported version {version} (this code reads {SCHEMA_VERSION})")
    name = r.str("name")
    if not NAME_RE.fullmatch(name):
        raise SpecError("name", f"must match {NAME_RE.pattern}, got {name!r}")

    ri = _Reader(obj["input"], "input", ("size", "channels", "mean", "std", "border"), ("size", "mean", "std"))
    channels = ri.int("channels", 1, 16, default=3)
    stats = {}
    for key in ("mean", "std"):
        v = obj["input"][key]
        if not isinstance(v, list) or len(v) != channels:
            raise SpecError(ri.p(key), f"must be a list of {channels} numbers, got {v!r}")
        # bounded so that 1/std and mean/std stay ordinary float32 numbers (the preprocess layer's scale, offset)
        stats[key] = tuple(_float(x, f"{ri.p(key)}[{i}]", lo=STD_MIN if key == "std" else -STAT_MAX, hi=STAT_MAX)
                           for i, x in enumerate(v))
    inp = InputSpec(size=ri.int("size", 8, MAX_INPUT_SIZE), channels=channels, mean=stats["mean"], std=stats["std"],
                    border=ri.str("border", BORDERS, default="mean"))

    rs = _Reader(obj["stem"], "stem", ("filters", "kernel", "stride", "act", "pool", "depthwise"),
                 ("filters", "kernel", "stride", "act"))
    stem = StemSpec(filters=rs.int("filters", 1, MAX_CHANNELS), kernel=rs.int("kernel", 1, 31),
                    stride=rs.int("stride", 1, 2), act=rs.str("act", ACTIVATIONS),
                    pool=rs.bool("pool", default=False),
                    depthwise=rs.bool("depthwise", default=False))
    if stem.kernel % 2 == 0:
        raise SpecError("stem.kernel", f"must be odd, got {stem.kernel}")
    if stem.depthwise and stem.filters % channels:
        raise SpecError("stem.filters", f"a depthwise stem multiplies the {channels} input channels: filters must be "
                                        f"a multiple of {channels}, got {stem.filters}")

    stages_obj = obj["stages"]
    if not isinstance(stages_obj, list) or not stages_obj:
        raise SpecError("stages", "must be a non-empty list of stages (lists of blocks)")
    stages, ch = [], stem.filters
    for i, stage in enumerate(stages_obj):
        if not isinstance(stage, list) or not stage:
            raise SpecError(f"stages[{i}]", "must be a non-empty list of blocks")
        blocks = []
        for j, b in enumerate(stage):
            block = _decode_block(b, f"stages[{i}][{j}]", ch)
            blocks.append(block)
            ch = block.filters
        stages.append(tuple(blocks))

    rh = _Reader(obj["head"], "head", ("filters", "act", "dropout", "classes", "bias"),
                 ("filters", "act", "dropout", "classes"))
    head = HeadSpec(filters=rh.int("filters", 1, MAX_CHANNELS, nullable=True), act=rh.str("act", ACTIVATIONS),
                    dropout=rh.float("dropout", 0.0, 0.99), classes=rh.int("classes", 1, MAX_CLASSES),
                    bias=rh.bool("bias", default=True))

    bn = BNSpec()
    if "bn" in obj:
        rb = _Reader(obj["bn"], "bn", ("eps", "momentum"), ())
        bn = BNSpec(eps=rb.float("eps", 0.0, 1.0, default=1e-3, lo_open=True),
                    momentum=rb.float("momentum", 0.0, 1.0, default=0.99))

    prov = Provenance(method="reference")
    if "provenance" in obj:
        rp = _Reader(obj["provenance"], "provenance", tuple(f.name for f in dataclasses.fields(Provenance)),
                     ("method",))
        metrics = rp.obj.get("metrics", {})
        if not isinstance(metrics, dict):
            raise SpecError(rp.p("metrics"), "must be an object of name → number")
        mr = _Reader(metrics, rp.p("metrics"), tuple(metrics), ())
        prov = Provenance(method=rp.str("method"), source=rp.str("source", default=None, nullable=True),
                          target=rp.float("target", default=None, nullable=True),
                          target_macs=rp.int("target_macs", 1, default=None, nullable=True),
                          seed=rp.int("seed", default=None, nullable=True),
                          data=rp.str("data", default=None, nullable=True),
                          notes=rp.str("notes", default=None, nullable=True),
                          metrics=tuple(sorted((str(k), mr.float(k)) for k in metrics)))

    spec = ModelSpec(name=name, family=r.str("family", FAMILIES), input=inp, stem=stem, stages=tuple(stages),
                     head=head, bn=bn, padding=r.str("padding", PADDINGS, default="same"), provenance=prov)
    check_input_size(spec, inp.size, "input.size")
    return spec


def check_input_size(spec: ModelSpec, size: int, path: str = "input_size") -> None:
    """Raises SpecError when ``size`` is not a usable input size.

    Every kernel is odd, so each layer maps ``n`` to ``ceil(n / stride)`` (:mod:`models.walk`), which never reaches
    0: any size >= 8 runs through every spec.
    """
    if isinstance(size, bool) or not hasattr(size, "__index__"):  # int or a numpy integer, not 32.0 or "32"
        raise SpecError(path, f"input size must be an integer, got {size!r}")
    if not 8 <= size <= MAX_INPUT_SIZE:
        raise SpecError(path, f"input size must be from 8 to {MAX_INPUT_SIZE}, got {size}")


# ---------------------------------------------------------------------------------------------------------------------

def _encode_bits(b):
    return None if b is None else {"w": b.w, "a": b.a}


def _encode_block(b: BlockSpec) -> dict:
    if isinstance(b, MBConvSpec):
        d = {"block": "ir", "kernels": list(b.kernels), "split": list(b.split), "expand_channels": b.expand_channels,
             "filters": b.filters, "stride": b.stride, "act": b.act, "se_channels": b.se_channels,
             "expand_groups": b.expand_groups, "project_groups": b.project_groups, "skip": b.skip,
             "bits": _encode_bits(b.bits)}
        if b.acts is not None:  # written only when set: specs without per-branch activations encode as before
            d["acts"] = list(b.acts)
        return d
    if isinstance(b, ConvSpec):
        return {"block": "conv", "kernels": list(b.kernels), "split": list(b.split), "filters": b.filters,
                "stride": b.stride, "act": b.act, "acts": None if b.acts is None else list(b.acts), "pool": b.pool}
    return {"block": "shuffle", "choice": b.choice, "filters": b.filters, "mid_channels": b.mid_channels,
            "stride": b.stride, "act": b.act, "bits": _encode_bits(b.bits)}


def _encode_stem(stem: StemSpec) -> dict:
    d = dataclasses.asdict(stem)
    if not stem.depthwise:  # written only when set: specs without it encode as before
        del d["depthwise"]
    return d


def encode(spec: ModelSpec) -> dict:
    """The canonical JSON-ready dict of ``spec`` (every field explicit but ``input.border``: only when not "mean")."""
    if not isinstance(spec, ModelSpec):
        raise SpecError("spec", f"encode takes a ModelSpec (decode a dict or JSON first), got {type(spec).__name__}")
    p = spec.provenance
    return {
        "schema_version": spec.schema_version, "name": spec.name, "family": spec.family,
        "input": {"size": spec.input.size, "channels": spec.input.channels, "mean": list(spec.input.mean),
                  "std": list(spec.input.std),
                  **({"border": spec.input.border} if spec.input.border != "mean" else {})},
        "stem": _encode_stem(spec.stem),
        "stages": [[_encode_block(b) for b in stage] for stage in spec.stages],
        "head": dataclasses.asdict(spec.head),
        "bn": dataclasses.asdict(spec.bn),
        "padding": spec.padding,
        "provenance": {"method": p.method, "source": p.source, "target": p.target,
                       "target_macs": p.target_macs, "seed": p.seed, "data": p.data,
                       "notes": p.notes, "metrics": dict(p.metrics)},
    }


def dumps(spec: ModelSpec) -> str:
    return json.dumps(encode(spec), indent=1) + "\n"


def loads(text: str | bytes, source: str = "spec") -> ModelSpec:
    """Parses JSON text (``bytes`` must be UTF-8) and decodes it. Whatever the bytes — not UTF-8, not JSON, nested
    too deep, integers too long to parse — the only exception is a SpecError naming ``source``."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")  # a UTF-8 byte-order mark is fine
        except UnicodeDecodeError as e:
            raw = bytes(text)
            kind = (" (it is a .tflite model)" if raw[4:8] == b"TFL3" else
                    " (it is a zip archive, e.g. .npz weights)" if raw[:2] == b"PK" else "")
            raise SpecError("", f"{source}: not a spec JSON{kind}: not UTF-8 text (byte {e.start}: {e.reason})") \
                from None
    if not isinstance(text, str):
        raise SpecError("", f"{source}: a spec is JSON text (str or UTF-8 bytes), got {type(text).__name__}")

    def no_duplicates(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:  # json would keep the last one silently (e.g. a second "name")
                raise SpecError("", f"{source}: key {key!r} appears twice in one object")
            seen.add(key)
        return dict(pairs)

    try:
        obj = json.loads(text, object_pairs_hook=no_duplicates)
    except SpecError:
        raise
    except json.JSONDecodeError as e:
        raise SpecError("", f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise SpecError("", f"{source}: not a spec (JSON nested too deep)") from None
    except ValueError as e:  # e.g. an integer literal beyond Python's 4,300-digit conversion limit
        raise SpecError("", f"{source}: not valid JSON ({e})") from None
    try:
        return decode(obj)
    except RecursionError:
        raise SpecError("", f"{source}: not a spec (nested too deep)") from None
