"""MBConv macro search space in which every depthwise conv is a meta-kernel layer (the paper's §4.3, MixNet-like).

A :class:`SearchSpace` fixes the macro architecture (stage widths, strides, expansion ratios, SE) and the candidate
kernel sizes; the search decides, per depthwise *filter*, its kernel size or "None" (pruned). From it:

- :func:`build_supernet` makes a Keras 3 Functional model: stock stem/head layers (same names as
  :mod:`models.builder`) and one :class:`SearchMBConv` layer per block, named ``s{stage}_b{block}``;
  ``dw_mode`` picks the depthwise form: ``"meta"`` (the method), ``"multi"`` (DARTS baseline) or ``"fixed"``
  (a plain ``k_max`` DepthwiseConv2D, no search: the cost reference).
- :func:`expected_cost` is E[MACs] and E[params] differentiable in α (softmax probabilities, Eq. 8), counting what a
  kept or pruned filter costs in its expansion conv, depthwise conv, squeeze-excite and projection.
- :func:`derive` turns the argmax choices into a zoo spec (``kernels`` + ``split``; pruned filters leave
  ``expand_channels``), and :func:`extract_weights` fills the derived Functional model: filters permuted into the
  per-kernel-size branches of DESIGN.md §3, depthwise kernels cropped from the meta kernel.

With one-hot α, ``expected_cost`` equals :func:`models.counting.count` of the derived spec, and the supernet in
inference mode computes the same function as the derived model (tests).

Blocks without an expansion conv (expansion ratio 1) cannot split their filters into per-kernel branches without
slicing the input, so they search one kernel size for the whole layer and never prune (``per_filter=False``,
``allow_none=False``).
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from models.builder import _Ops
from models.counting import Cost, _mbconv, count
from models.spec import (
    ModelSpec,
    Provenance,
)
from search.metakernel import PACKAGE, MetaKernelDepthwise, MultiPathDepthwise
from search.metakernel_space import DW_MODES, SearchSpace, Slot, check_candidates, cifar_space, imagenet_space  # noqa: F401


def _activation(x, act):
    if act == "relu":
        return ops.relu(x)
    if act == "relu6":
        return ops.relu6(x)
    if act == "swish":
        return x * ops.sigmoid(x)
    if act == "hswish":
        return x * ops.clip(x / 6.0 + 0.5, 0.0, 1.0)
    raise ValueError(f"act: unknown activation {act!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class SearchMBConv(keras.layers.Layer):
    """Inverted-residual block with a searchable depthwise conv (the supernet's only custom layer).

    expand 1×1 → BN → act → searchable dw → BN → act → × keep (1 − p_None) → [SE] → project 1×1 → BN → [+ input].
    Sub-layers are stock Keras layers except the depthwise (``dw``): a :class:`MetaKernelDepthwise`,
    a :class:`MultiPathDepthwise`, or, with ``dw_mode="fixed"``, a plain ``k_max`` ``DepthwiseConv2D``.
    """

    def __init__(self, filters, expand_channels=None, strides=1, act="relu", se_channels=0, candidates=(3, 5, 7),
                 dw_mode="meta", skip=True, bn_epsilon=1e-3, bn_momentum=0.99, tau=1.0, alpha_init_std=0.0,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        if dw_mode not in DW_MODES:
            raise ValueError(f"dw_mode: one of {DW_MODES}, got {dw_mode!r}")
        self.filters, self.expand_channels, self.strides = int(filters), expand_channels, int(strides)
        self.act, self.se_channels, self.dw_mode, self.skip = act, int(se_channels), dw_mode, bool(skip)
        self.candidates = check_candidates(candidates)
        self.bn_epsilon, self.bn_momentum = float(bn_epsilon), float(bn_momentum)
        self.tau, self.alpha_init_std, self.seed = float(tau), float(alpha_init_std), seed
        bn = lambda: keras.layers.BatchNormalization(epsilon=self.bn_epsilon, momentum=self.bn_momentum)  # noqa: E731
        expanded = expand_channels is not None
        if expanded:
            self.expand_conv = keras.layers.Conv2D(int(expand_channels), 1, use_bias=False, name="expand_conv")
            self.expand_bn = bn()
        if dw_mode == "fixed":
            self.dw = keras.layers.DepthwiseConv2D(self.candidates[-1], strides=self.strides, padding="same",
                                                   use_bias=False, name="dw")
        else:
            cls = MetaKernelDepthwise if dw_mode == "meta" else MultiPathDepthwise
            self.dw = cls(self.candidates, strides=self.strides, allow_none=expanded, per_filter=expanded, tau=tau,
                          alpha_init_std=alpha_init_std, seed=seed, name="dw")
        self.dw_bn = bn()
        if self.se_channels:
            self.se_reduce = keras.layers.Conv2D(self.se_channels, 1, name="se_reduce")
            self.se_expand = None  # built in build(): needs the expanded width
        self.project_conv = keras.layers.Conv2D(self.filters, 1, use_bias=False, name="project_conv")
        self.project_bn = bn()

    @property
    def searchable(self) -> bool:
        return self.dw_mode != "fixed"

    def build(self, input_shape):
        self.in_channels = int(input_shape[-1])
        shape = tuple(input_shape)
        mid = self.in_channels
        if self.expand_channels is not None:
            self.expand_conv.build(shape)
            mid = int(self.expand_channels)
            shape = shape[:-1] + (mid,)
            self.expand_bn.build(shape)
        self.mid_channels = mid
        self.dw.build(shape)
        out_shape = self.dw.compute_output_shape(shape)
        self.dw_bn.build(out_shape)
        if self.se_channels:
            self.se_reduce.build((None, 1, 1, mid))
            self.se_expand = keras.layers.Conv2D(mid, 1, name="se_expand")
            self.se_expand.build((None, 1, 1, self.se_channels))
        self.project_conv.build(out_shape)
        self.project_bn.build(out_shape[:-1] + (self.filters,))
        self.residual = self.skip and self.strides == 1 and self.in_channels == self.filters

    def call(self, inputs, training=None):
        y = inputs
        if self.expand_channels is not None:
            y = _activation(self.expand_bn(self.expand_conv(y), training=training), self.act)
        keep = None
        if self.searchable:
            p = self.dw.sample(training)
            y = self.dw.conv(y, p)
            keep = self.dw.keep(p)
        else:
            y = self.dw(y)
        y = _activation(self.dw_bn(y, training=training), self.act)
        if keep is not None:
            y = y * keep
        if self.se_channels:
            s = ops.mean(y, axis=(1, 2), keepdims=True)
            s = _activation(self.se_reduce(s), self.act)
            y = y * ops.sigmoid(self.se_expand(s))
        y = self.project_bn(self.project_conv(y), training=training)
        return y + inputs if self.residual else y

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        out = lambda n: None if n is None else -(-n // self.strides)  # noqa: E731
        return (b, out(h), out(w), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, expand_channels=self.expand_channels, strides=self.strides, act=self.act,
                      se_channels=self.se_channels, candidates=list(self.candidates), dw_mode=self.dw_mode,
                      skip=self.skip, bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum, tau=self.tau,
                      alpha_init_std=self.alpha_init_std, seed=self.seed)
        return config

    def expected_cost(self, n_in: int, p=None):
        """(E[MACs], E[params]) of this block for choice probabilities ``p`` (default softmax α), as tensors."""
        n_out = -(-n_in // self.strides)
        cin, cout, se = self.in_channels, self.filters, self.se_channels
        if not self.searchable:
            k = self.candidates[-1]
            area = ops.full((self.mid_channels,), float(k * k))
            keep = ops.ones((self.mid_channels,))
        else:
            p = self.dw.probabilities() if p is None else p
            area = self.dw.expected_area(p) * ops.ones((self.mid_channels,))  # a shared row broadcasts to C
            keep = self.dw.keep(p)
            keep = ops.ones((self.mid_channels,)) if keep is None else keep
        mid = ops.sum(keep)
        macs = n_out * n_out * ops.sum(area) + n_out * n_out * mid * cout
        params = ops.sum(area) + 2 * mid + mid * cout + 2 * cout
        if self.expand_channels is not None:
            macs = macs + n_in * n_in * cin * mid
            params = params + cin * mid + 2 * mid
        if se:
            macs = macs + 2 * mid * se
            params = params + 2 * mid * se + se + mid
        return macs, params


def build_supernet(space: SearchSpace, dw_mode: str = "meta", *, tau: float = 1.0, alpha_init_std: float = 0.0,
                   seed: int | None = None, classes: int | None = None, name: str | None = None) -> keras.Model:
    """The supernet of ``space`` as a Keras 3 Functional model taking raw 0–255 RGB (``preprocess`` inside)."""
    skeleton = space.skeleton()
    if classes is not None:
        skeleton = dataclasses.replace(skeleton, head=dataclasses.replace(skeleton.head, classes=classes))
    o = _Ops(keras, skeleton)
    L = keras.layers
    inputs = L.Input((space.input_size, space.input_size, 3), name="image")
    x = L.Rescaling(scale=[1.0 / s for s in space.std], offset=[-m / s for m, s in zip(space.mean, space.std)],
                    name="preprocess")(inputs)
    x = o.conv_bn_act(x, space.stem_filters, 3, space.stem_stride, "stem", space.stem_act)
    for n, b in enumerate(space.blocks()):
        x = SearchMBConv(b.filters, b.expand, b.stride, b.act, b.se, space.candidates, dw_mode,
                         bn_epsilon=space.bn.eps, bn_momentum=space.bn.momentum, tau=tau,
                         alpha_init_std=alpha_init_std, seed=None if seed is None else seed + n, name=b.name)(x)
    head = skeleton.head
    if head.filters is not None:
        x = o.conv_bn_act(x, head.filters, 1, 1, "head", head.act)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    if head.dropout > 0:
        x = L.Dropout(head.dropout, name="dropout")(x)
    x = L.Dense(head.classes, name="classifier")(x)
    return keras.Model(inputs, x, name=name or f"{space.name}_{dw_mode}_supernet")


def search_blocks(model: keras.Model) -> list[SearchMBConv]:
    return [layer for layer in model.layers if isinstance(layer, SearchMBConv)]


def arch_variables(model: keras.Model) -> list:
    """The architecture parameters α (trained by their own optimizer)."""
    return [b.dw.alpha for b in search_blocks(model) if b.searchable]


def weight_variables(model: keras.Model) -> list:
    """Trainable variables other than α."""
    arch = {id(v) for v in arch_variables(model)}
    return [v for v in model.trainable_variables if id(v) not in arch]


def set_temperature(model: keras.Model, tau: float) -> None:
    for b in search_blocks(model):
        if b.searchable:
            b.dw.tau.assign(tau)


def _fixed_cost(space: SearchSpace, classes: int) -> tuple[int, int]:
    """MACs and params outside the searchable blocks (stem, head conv, classifier) as exact integers: the
    skeleton's count minus each of its blocks."""
    skeleton = space.skeleton()
    total = count(skeleton, classes=classes)
    macs, params = total.macs, total.params
    for slot, (_, _, b) in zip(space.blocks(), skeleton.blocks()):
        c = Cost()
        _mbconv(c, b, slot.n_in, slot.in_ch)
        macs, params = macs - c.macs, params - c.params
    return macs, params



def expected_cost(model: keras.Model, space: SearchSpace, probs=None):
    """(E[MACs], E[params]) of the whole supernet as differentiable tensors (Eq. 6's E[C(A)]).

    ``probs``: optional list of per-block probability tensors (default: softmax of each block's α). Pruned filters
    lower the cost of their expansion conv, depthwise conv, SE and the next 1×1 projection.
    """
    classes = int(model.get_layer("classifier").units)
    fixed_macs, fixed_params = _fixed_cost(space, classes)
    macs, params = ops.convert_to_tensor(float(fixed_macs)), ops.convert_to_tensor(float(fixed_params))
    for n, (block, slot) in enumerate(zip(search_blocks(model), space.blocks())):
        m, p = block.expected_cost(slot.n_in, None if probs is None else probs[n])
        macs, params = macs + m, params + p
    return macs, params


def choices(model: keras.Model, logits: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Per block, the argmax choice index of every α row (0 = "None" where the block may prune).

    ``logits`` overrides the model's α (used by :func:`project_to_target`).
    """
    out = []
    for n, block in enumerate(search_blocks(model)):
        if not block.searchable:
            out.append(np.full((1,), len(block.candidates) - 1))  # k_max, no None
            continue
        a = np.asarray(block.dw.alpha) if logits is None else logits[n]
        c = np.argmax(np.asarray(block.dw.tie_broken(a)), axis=-1)
        if block.dw.allow_none and np.all(c == 0):
            # Every filter pruned: keep the filter most likely to be kept, at its best kernel (a block needs ≥ 1).
            best = int(np.argmax(np.max(a[:, 1:], axis=-1) - a[:, 0]))
            c[best] = 1 + int(np.argmax(a[best, 1:]))
        out.append(c)
    return out


def _groups(block: SearchMBConv, choice: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``[(kernel, filter indices)]`` in ascending kernel order, pruned filters dropped."""
    offset = 1 if block.searchable and block.dw.allow_none else 0
    if not block.searchable:
        return [(block.candidates[-1], np.arange(block.mid_channels))]
    if not block.dw.per_filter:  # one choice for the layer
        return [(block.candidates[int(choice[0]) - offset], np.arange(block.mid_channels))]
    groups = []
    for i, k in enumerate(block.candidates):
        idx = np.flatnonzero(choice == i + offset)
        if idx.size:
            groups.append((k, idx))
    return groups


def derive(model: keras.Model, space: SearchSpace, name: str, provenance: Provenance | None = None,
           choice: list[np.ndarray] | None = None) -> ModelSpec:
    """The argmax architecture (or ``choice``) as a zoo spec: ``kernels`` + ``split`` per block."""
    choice = choices(model) if choice is None else choice
    classes = int(model.get_layer("classifier").units)
    stages: dict[int, list] = {}
    for block, slot, c in zip(search_blocks(model), space.blocks(), choice):
        groups = _groups(block, c)
        stages.setdefault(slot.stage, []).append(slot.spec([k for k, _ in groups], [len(i) for _, i in groups]))
    spec = space._spec(tuple(tuple(b) for b in stages.values()), name, provenance)
    return dataclasses.replace(spec, head=dataclasses.replace(spec.head, classes=classes))


def extract_weights(model: keras.Model, space: SearchSpace, spec: ModelSpec,
                    choice: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Weights of the derived model ``spec`` (``{"layer/var": array}``, :mod:`models.weights` names) from the
    supernet: stem/head copied, each block's filters partitioned into its kernel-size branches, depthwise kernels
    cropped from the meta kernel, SE and projection weights restricted to the kept filters in branch order."""
    choice = choices(model) if choice is None else choice
    out = {}
    for layer in model.layers:
        if not isinstance(layer, SearchMBConv):
            for v in layer.weights:
                out[f"{layer.name}/{v.name.split('/')[-1]}"] = np.asarray(v)
    bn_vars = ("gamma", "beta", "moving_mean", "moving_variance")

    def bn(dst, src_bn, idx=None):
        for var, value in zip(bn_vars, (src_bn.gamma, src_bn.beta, src_bn.moving_mean, src_bn.moving_variance)):
            a = np.asarray(value)
            out[f"{dst}/{var}"] = a if idx is None else a[idx]

    for block, slot, c, (_, _, b) in zip(search_blocks(model), space.blocks(), choice, spec.blocks()):
        groups = _groups(block, c)
        if tuple(k for k, _ in groups) != b.kernels or tuple(len(i) for _, i in groups) != b.split:
            raise ValueError(f"{slot.name}: spec block {b.kernels}/{b.split} does not match the supernet choice")
        p = slot.name
        for g, (k, idx) in enumerate(groups):
            bp = p if len(groups) == 1 else f"{p}_g{g}"
            if block.expand_channels is not None:
                out[f"{bp}_expand_conv/kernel"] = np.asarray(block.expand_conv.kernel)[..., idx]
                bn(f"{bp}_expand_bn", block.expand_bn, idx)
            dw = block.dw.kernel.numpy() if not block.searchable else block.dw.crop(k)
            out[f"{bp}_dw/kernel"] = dw[..., idx, :] if block.expand_channels is not None else dw
            bn(f"{bp}_dw_bn", block.dw_bn, idx if block.expand_channels is not None else None)
        kept = np.concatenate([idx for _, idx in groups])
        if block.se_channels:
            out[f"{p}_se_reduce/kernel"] = np.asarray(block.se_reduce.kernel)[:, :, kept, :]
            out[f"{p}_se_reduce/bias"] = np.asarray(block.se_reduce.bias)
            out[f"{p}_se_expand/kernel"] = np.asarray(block.se_expand.kernel)[..., kept]
            out[f"{p}_se_expand/bias"] = np.asarray(block.se_expand.bias)[kept]
        out[f"{p}_project_conv/kernel"] = np.asarray(block.project_conv.kernel)[:, :, kept, :]
        bn(f"{p}_project_bn", block.project_bn)
    return out


def build_derived(model: keras.Model, space: SearchSpace, spec: ModelSpec, choice=None, keras_module=None):
    """The derived spec as a stock-layer Functional model carrying the supernet's extracted weights."""
    from models.builder import build
    from models.weights import assign
    derived = build(spec, keras_module)
    assign(derived, extract_weights(model, space, spec, choice), source="supernet extraction")
    return derived


def _choice_costs(block: SearchMBConv, slot: Slot) -> np.ndarray:
    """MACs each choice of each α row adds to the block (row × choice), for :func:`project_to_target`."""
    n_out = -(-slot.n_in // slot.stride)
    areas = np.array([k * k for k in block.candidates], np.float64) * n_out * n_out
    if not block.dw.per_filter:  # one row for the whole layer
        return (areas * block.mid_channels)[None, :]
    per_filter = slot.n_in * slot.n_in * slot.in_ch + n_out * n_out * slot.filters + 2 * slot.se
    row = np.concatenate([[0.0], per_filter + areas]) if block.dw.allow_none else per_filter + areas
    return np.tile(row, (block.mid_channels, 1))


def project_to_target(model: keras.Model, space: SearchSpace, target: float, tol: float = 0.03,
                      max_moves: int = 100_000) -> tuple[list[np.ndarray], int, int]:
    """Moves the argmax architecture onto the MACs budget with the least loss of α preference.

    MACs are additive over α rows (each filter's expansion, depthwise, SE and projection share; a layer-wise row's
    whole layer), so a move (one row to another choice) changes MACs by a known amount. Greedily, the move with the
    smallest ``(α_current − α_new) / |ΔMACs|`` toward the target is applied — a move that does not cross the target
    when one exists, else one that crosses it but ends closer — until no move gets closer. A block always keeps one filter. Nothing moves when the
    argmax is already within ``tol``. Returns ``(choice, moves, macs)``.

    Why: the cost loss steers *expected* MACs; per-filter α of one layer receive nearly the same cost gradient, so
    the argmax of a not-fully-converged α can flip whole layers at once and sit far from the target.
    """
    blocks = search_blocks(model)
    logits = [np.asarray(b.dw.tie_broken(np.asarray(b.dw.alpha)), np.float64) for b in blocks]
    costs = [_choice_costs(b, s) for b, s in zip(blocks, space.blocks())]
    choice = [c.copy() for c in choices(model)]
    macs = count(derive(model, space, "probe", choice=choice)).macs
    if abs(macs - target) <= tol * target:
        return choice, 0, macs
    direction = -1.0 if macs > target else 1.0
    moves = 0
    while moves < max_moves and macs != target:
        direction, gap = np.sign(target - macs), abs(target - macs)
        best = None
        for overshoot in (False, True):  # moves that stay on this side of the target first
            for n, (a, c, cur) in enumerate(zip(logits, costs, choice)):
                rows = np.arange(len(cur))
                delta = c - c[rows, cur][:, None]
                regret = a[rows, cur][:, None] - a
                reach = np.abs(macs + delta - target) < gap if overshoot else np.abs(delta) <= gap
                valid = (direction * delta > 0) & reach
                if blocks[n].dw.allow_none and np.count_nonzero(cur) == 1:
                    valid[:, 0] = False  # the last kept filter of a block stays
                ratio = np.where(valid, regret / np.where(valid, np.abs(delta), 1.0), np.inf)
                r, j = np.unravel_index(np.argmin(ratio), ratio.shape)
                if np.isfinite(ratio[r, j]) and (best is None or ratio[r, j] < best[0]):
                    best = (ratio[r, j], n, r, j, delta[r, j])
            if best is not None:
                break
        if best is None:
            break  # no move gets closer (or the target is out of reach)
        _, n, r, j, d = best
        choice[n][r] = j
        macs += int(round(d))
        moves += 1
    return choice, moves, count(derive(model, space, "probe", choice=choice)).macs
