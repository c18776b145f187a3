"""MBConv macro search space in which every depthwise conv is a meta-kernel layer (the paper's §4.3, MixNet-like).

A :class:`~search.metakernel_space.SearchSpace` fixes the macro architecture (stage widths, strides, expansion ratios,
SE) and the candidate kernel sizes; the search decides, per depthwise *filter*, its kernel size or "None" (pruned).
From it:

- :func:`build_supernet` makes a Keras 3 Functional model: preprocessing, stem and head from :mod:`models.builder`
  (the derived model's layers and names) and one :class:`SearchMBConv` layer per block, named ``s{stage}_b{block}``;
  ``dw_mode`` picks the depthwise form: ``"meta"`` (the method), ``"multi"`` (DARTS baseline) or ``"fixed"``
  (a plain ``k_max`` DepthwiseConv2D, no search: the cost reference).
- :func:`expected_cost` is E[MACs] and E[params] differentiable in α (softmax probabilities, Eq. 8), counting what a
  kept or pruned filter costs in its expansion conv, depthwise conv, squeeze-excite and projection.
- :class:`MetaKernelSupernet` (the model and its space) is the :class:`search.protocol.Supernet`: an architecture
  (one choice array per block, e.g. :meth:`~MetaKernelSupernet.choices`, the argmax) in, a zoo spec out
  (``kernels`` + ``split``; pruned filters leave ``expand_channels``), and the derived Functional model's weights
  out: filters permuted into the per-kernel-size branches of DESIGN.md §3, depthwise kernels cropped from the meta
  kernel. Each :class:`SearchMBConv` derives and extracts its own block (``derive_block``/``extract_block``).

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

from models.builder import Ops, build_head, build_stem
from models.counting import count, head_cost, stem_cost
from models.spec import MBConvSpec, ModelSpec, Provenance
from models.walk import walk
from search import PACKAGE
from search.metakernel import MetaKernelDepthwise, MultiPathDepthwise
from search.metakernel_space import DW_MODES, SearchSpace, Slot, check_candidates
from search.protocol import block_specs, build_derived

BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


def activation(x, act, prelu=None):
    """The spec's activation ``act`` on ``x`` inside a search layer (``prelu``: the PReLU layer of ``"prelu"``)."""
    if act == "relu":
        return ops.relu(x)
    if act == "relu6":
        return ops.relu6(x)
    if act == "swish":
        return x * ops.sigmoid(x)
    if act == "hswish":
        return x * ops.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if act == "tanh":
        return ops.tanh(x)
    if act == "prelu" and prelu is not None:
        return prelu(x)
    raise ValueError(f"act: unknown activation {act!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class SearchMBConv(keras.layers.Layer):
    """Inverted-residual block with a searchable depthwise conv (the supernet's only custom layer).

    expand 1×1 → BN → act → searchable dw → BN → act → × keep (1 − p_None) → [SE] → project 1×1 → BN → [+ input].
    The keep gate is computed as part of SE's pooled vector and of the projection kernel (mathematically the same
    product, but no extra activation is stored for the backward pass).
    Sub-layers are stock Keras layers except the depthwise (``dw``): a :class:`MetaKernelDepthwise`,
    a :class:`MultiPathDepthwise`, or, with ``dw_mode="fixed"``, a plain ``k_max`` ``DepthwiseConv2D``.

    A :class:`search.protocol.SearchBlock`: for a choice array (one entry per α row) :meth:`derive_block` gives the
    derived block's spec and :meth:`extract_block` its weights, named like the builder's ``{name}_*`` layers.
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
            y = activation(self.expand_bn(self.expand_conv(y), training=training), self.act)
        keep = None
        if self.searchable:
            p = self.dw.sample(training)
            y = self.dw.conv(y, p)
            keep = self.dw.keep(p)
        else:
            y = self.dw(y)
        y = activation(self.dw_bn(y, training=training), self.act)
        # The keep gate multiplies every channel of y; it is applied where it costs no stored activation: on SE's
        # pooled vector and folded into the projection kernel's input rows (conv(y·keep, W) = conv(y, keep·W)).
        if self.se_channels:
            s = ops.mean(y, axis=(1, 2), keepdims=True)
            if keep is not None:
                s = s * keep
            s = activation(self.se_reduce(s), self.act)
            y = y * ops.sigmoid(self.se_expand(s))
        kernel = self.project_conv.kernel
        if keep is not None:
            kernel = kernel * ops.reshape(keep, (1, 1, -1, 1))
        y = self.project_bn(ops.conv(y, kernel, strides=1, padding="valid"), training=training)
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

    # --- the derived block (search.protocol.SearchBlock) ----------------------------------------------------------
    def argmax_choice(self, alpha=None) -> np.ndarray:
        """The argmax choice index of every α row (0 = "None" where the block may prune); ``alpha`` overrides the
        layer's logits. A block keeps at least one filter."""
        if not self.searchable:
            return np.full((1,), len(self.candidates) - 1)  # k_max, no None
        a = np.asarray(self.dw.alpha) if alpha is None else alpha
        c = np.argmax(np.asarray(self.dw.tie_broken(a)), axis=-1)
        if self.dw.allow_none and np.all(c == 0):
            # Every filter pruned: keep the filter most likely to be kept, at its best kernel (a block needs ≥ 1).
            best = int(np.argmax(np.max(a[:, 1:], axis=-1) - a[:, 0]))
            c[best] = 1 + int(np.argmax(a[best, 1:]))
        return c

    def groups(self, choice) -> list[tuple[int, np.ndarray]]:
        """``[(kernel, filter indices)]`` of ``choice`` in ascending kernel order, pruned filters dropped."""
        if not self.searchable:
            return [(self.candidates[-1], np.arange(self.mid_channels))]
        offset = 1 if self.dw.allow_none else 0
        if not self.dw.per_filter:  # one choice for the layer
            return [(self.candidates[int(choice[0]) - offset], np.arange(self.mid_channels))]
        out = []
        for i, k in enumerate(self.candidates):
            idx = np.flatnonzero(np.asarray(choice) == i + offset)
            if idx.size:
                out.append((k, idx))
        return out

    def derive_block(self, choice) -> MBConvSpec:
        """The block of ``choice`` as a zoo block spec: ``kernels`` + ``split`` (filters per kernel size); pruned
        filters shrink ``expand_channels``."""
        groups = self.groups(choice)
        split = tuple(len(i) for _, i in groups)
        return MBConvSpec(kernels=tuple(int(k) for k, _ in groups), split=split,
                          expand_channels=sum(split) if self.expand_channels is not None else None,
                          filters=self.filters, stride=self.strides, act=self.act, se_channels=self.se_channels,
                          skip=self.skip)

    def extract_block(self, choice, spec: MBConvSpec | None = None) -> dict[str, np.ndarray]:
        """Weights of the derived block (``{"layer/var": array}``, the builder's names): filters partitioned into
        the kernel-size branches, depthwise kernels cropped from the meta kernel, SE and projection weights
        restricted to the kept filters in branch order."""
        groups, p, out = self.groups(choice), self.name, {}
        if spec is not None and (tuple(k for k, _ in groups) != spec.kernels
                                 or tuple(len(i) for _, i in groups) != spec.split):
            raise ValueError(f"{p}: spec block {spec.kernels}/{spec.split} does not match the supernet choice")

        def bn(dst, src, idx=None):
            for var, value in zip(BN_VARIABLES, (src.gamma, src.beta, src.moving_mean, src.moving_variance)):
                a = np.asarray(value)
                out[f"{dst}/{var}"] = a if idx is None else a[idx]

        expanded = self.expand_channels is not None
        for g, (k, idx) in enumerate(groups):
            bp = p if len(groups) == 1 else f"{p}_g{g}"
            if expanded:
                out[f"{bp}_expand_conv/kernel"] = np.asarray(self.expand_conv.kernel)[..., idx]
                bn(f"{bp}_expand_bn", self.expand_bn, idx)
            dw = self.dw.kernel.numpy() if not self.searchable else self.dw.crop(k)
            out[f"{bp}_dw/kernel"] = dw[..., idx, :] if expanded else dw
            bn(f"{bp}_dw_bn", self.dw_bn, idx if expanded else None)
        kept = np.concatenate([idx for _, idx in groups])
        if self.se_channels:
            out[f"{p}_se_reduce/kernel"] = np.asarray(self.se_reduce.kernel)[:, :, kept, :]
            out[f"{p}_se_reduce/bias"] = np.asarray(self.se_reduce.bias)
            out[f"{p}_se_expand/kernel"] = np.asarray(self.se_expand.kernel)[..., kept]
            out[f"{p}_se_expand/bias"] = np.asarray(self.se_expand.bias)[kept]
        out[f"{p}_project_conv/kernel"] = np.asarray(self.project_conv.kernel)[:, :, kept, :]
        bn(f"{p}_project_bn", self.project_bn)
        return out

    def inherit_block(self, arrays: dict, spec: MBConvSpec) -> None:
        """Sets this block from the weights of a one-kernel-size member block ``spec`` (``arrays``: the builder's
        ``{name}_*`` names, :mod:`models.weights`): the meta kernel is its k×k kernel zero-padded to k_max (the centred
        crop of a meta kernel is how a derived block reads it back), every other weight copied. The inverse of
        :meth:`extract_block` for unpruned, single-size blocks."""
        p = self.name
        if len(spec.kernels) != 1 or spec.kernels[0] not in self.candidates:
            raise ValueError(f"{p}: inherit needs one kernel size of {list(self.candidates)}, got {spec.kernels}")
        if (spec.expand_channels is None) != (self.expand_channels is None) or (
                spec.expand_channels is not None and spec.expand_channels != self.expand_channels):
            raise ValueError(f"{p}: expansion {spec.expand_channels} differs from the space's {self.expand_channels}")

        def take(name, shape):
            a = arrays.get(name)
            if a is None or tuple(a.shape) != tuple(shape):
                raise ValueError(f"{p}: {name} is {None if a is None else a.shape}, the supernet needs {tuple(shape)}")
            return a

        def bn(src, layer):
            for var, value in zip(BN_VARIABLES, (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)):
                value.assign(take(f"{src}/{var}", value.shape))

        if self.expand_channels is not None:
            self.expand_conv.kernel.assign(take(f"{p}_expand_conv/kernel", self.expand_conv.kernel.shape))
            bn(f"{p}_expand_bn", self.expand_bn)
        k = spec.kernels[0]
        small = take(f"{p}_dw/kernel", (k, k, self.mid_channels, 1))
        if self.searchable:
            full = np.zeros(tuple(self.dw.kernel.shape), np.float32)
            o = (self.candidates[-1] - k) // 2
            full[o:o + k, o:o + k] = small
            self.dw.kernel.assign(full)
        else:
            self.dw.depthwise_kernel.assign(small)
        bn(f"{p}_dw_bn", self.dw_bn)
        if self.se_channels:
            for layer, name in ((self.se_reduce, "se_reduce"), (self.se_expand, "se_expand")):
                layer.kernel.assign(take(f"{p}_{name}/kernel", layer.kernel.shape))
                layer.bias.assign(take(f"{p}_{name}/bias", layer.bias.shape))
        self.project_conv.kernel.assign(take(f"{p}_project_conv/kernel", self.project_conv.kernel.shape))
        bn(f"{p}_project_bn", self.project_bn)

    def choice_macs(self, n_in: int) -> np.ndarray:
        """MACs each choice of each α row adds to the block on an ``n_in``×``n_in`` input (row × choice)."""
        n_out = -(-n_in // self.strides)
        areas = np.array([k * k for k in self.candidates], np.float64) * n_out * n_out
        if not self.dw.per_filter:  # one row for the whole layer
            return (areas * self.mid_channels)[None, :]
        per_filter = n_in * n_in * self.in_channels + n_out * n_out * self.filters + 2 * self.se_channels
        row = np.concatenate([[0.0], per_filter + areas]) if self.dw.allow_none else per_filter + areas
        return np.tile(row, (self.mid_channels, 1))


def build_supernet(space: SearchSpace, dw_mode: str = "meta", *, tau: float = 1.0, alpha_init_std: float = 0.0,
                   seed: int | None = None, classes: int | None = None, name: str | None = None) -> keras.Model:
    """The supernet of ``space`` as a Keras 3 Functional model taking raw 0–255 RGB (``preprocess`` inside).

    Preprocessing, stem and head are the builder's (:mod:`models.builder`) for the space's skeleton spec, so their
    layers and names are the derived model's."""
    skeleton = space.skeleton()
    if classes is not None:
        skeleton = dataclasses.replace(skeleton, head=dataclasses.replace(skeleton.head, classes=classes))
    o = Ops(keras, skeleton)
    inputs = keras.layers.Input((space.input_size, space.input_size, 3), name="image")
    x = build_stem(o, inputs, True, space.input_size)
    for n, b in enumerate(space.blocks()):
        x = SearchMBConv(b.filters, b.expand, b.stride, b.act, b.se, space.candidates, dw_mode,
                         bn_epsilon=space.bn.eps, bn_momentum=space.bn.momentum, tau=tau,
                         alpha_init_std=alpha_init_std, seed=None if seed is None else seed + n, name=b.name)(x)
    x = build_head(o, x)
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
    """MACs and params outside the searchable blocks (stem, head conv, classifier) as exact integers."""
    w = walk(space.skeleton())
    c = stem_cost(w) + head_cost(w, classes=classes)
    return c.macs, c.params


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


class MetaKernelSupernet:
    """The meta-kernel supernet (a :func:`build_supernet` model and its space) as a
    :class:`search.protocol.Supernet`.

    An architecture is one int array per :class:`SearchMBConv` block, one entry per α row: the choice index
    (0 = "None" where the block may prune, else the candidate's index; :meth:`choices` gives the argmax). Every
    method taking ``arch`` uses the argmax when it is None.
    """

    def __init__(self, model: keras.Model, space: SearchSpace):
        self.model, self.space = model, space
        self.blocks = search_blocks(model)
        self.slots: list[Slot] = list(space.blocks())
        if [b.name for b in self.blocks] != [s.name for s in self.slots]:
            raise ValueError(f"model {model.name!r} is not a supernet of space {space.name!r}")

    @property
    def classes(self) -> int:
        return int(self.model.get_layer("classifier").units)

    def choices(self, logits: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Per block, the argmax choice of every α row (``logits`` overrides the model's α)."""
        return [b.argmax_choice(None if logits is None else logits[n]) for n, b in enumerate(self.blocks)]

    # --- search.protocol.Supernet ---------------------------------------------------------------------------------
    def derive(self, arch=None, *, name: str = "derived", provenance: Provenance | None = None) -> ModelSpec:
        """``arch`` (default: the argmax) as a zoo spec: ``kernels`` + ``split`` per block."""
        arch = self.choices() if arch is None else arch
        stages: dict[int, list] = {}
        for block, slot, c in zip(self.blocks, self.slots, arch):
            stages.setdefault(slot.stage, []).append(block.derive_block(c))
        spec = self.space.assemble(tuple(tuple(b) for b in stages.values()), name, provenance)
        return dataclasses.replace(spec, head=dataclasses.replace(spec.head, classes=self.classes))

    def member_choice(self, spec: ModelSpec) -> list[np.ndarray]:
        """The architecture (choice arrays) of ``spec``, an unpruned member of the space with one kernel size per
        block (e.g. EfficientNet-Lite0 in ``lite0_space``)."""
        blocks = block_specs(spec, len(self.blocks))
        arch = []
        for block, b in zip(self.blocks, blocks):
            if len(b.kernels) != 1 or b.kernels[0] not in block.candidates:
                raise ValueError(f"{block.name}: {b.kernels} is not one kernel size of {list(block.candidates)}")
            if not block.searchable:  # a fixed k_max block (dw_mode="fixed"), as argmax_choice reports it
                arch.append(np.full((1,), len(block.candidates) - 1))
                continue
            arch.append(np.full((block.dw.alpha.shape[0],), block.candidates.index(b.kernels[0]) + block.dw.offset))
        return arch

    def inherit(self, arrays: dict[str, np.ndarray], spec: ModelSpec) -> None:
        """Seeds the supernet with the weights ``arrays`` of ``spec`` (an unpruned one-size-per-block member of the
        space, :mod:`models.weights` names): stem, head and classifier copied by layer name, every block through
        :meth:`SearchMBConv.inherit_block` (meta kernels = the member's kernels zero-padded to k_max)."""
        for layer in self.model.layers:
            if isinstance(layer, SearchMBConv):
                continue
            for v in layer.weights:
                key = f"{layer.name}/{v.name.split('/')[-1]}"
                if key not in arrays or tuple(arrays[key].shape) != tuple(v.shape):
                    raise ValueError(f"{key}: {arrays[key].shape if key in arrays else 'missing'} in the weights, "
                                     f"the supernet needs {tuple(v.shape)}")
                v.assign(arrays[key])
        for block, b in zip(self.blocks, block_specs(spec, len(self.blocks))):
            block.inherit_block(arrays, b)

    def set_choice(self, arch, margin: float = 10.0) -> None:
        """α one-hot-like at ``arch`` (``margin`` above every other choice): the argmax, and under softmax at
        τ ≤ 1 a near-certain choice."""
        for block, c in zip(self.blocks, arch):
            if block.searchable:
                block.dw.alpha.assign(np.eye(block.dw.num_choices, dtype=np.float32)[np.asarray(c)] * margin)

    def extract(self, arch=None, spec: ModelSpec | None = None) -> dict[str, np.ndarray]:
        """Weights of ``arch``'s derived model (``{"layer/var": array}``, :mod:`models.weights` names): stem and
        head copied (the builder's layers), every block's from :meth:`SearchMBConv.extract_block`."""
        arch = self.choices() if arch is None else arch
        out = {}
        for layer in self.model.layers:
            if not isinstance(layer, SearchMBConv):
                for v in layer.weights:
                    out[f"{layer.name}/{v.name.split('/')[-1]}"] = np.asarray(v)
        for block, c, b in zip(self.blocks, arch, block_specs(spec, len(self.blocks))):
            out.update(block.extract_block(c, b))
        return out

    def derived_model(self, arch=None, keras_module=None, *, spec: ModelSpec | None = None):
        """``arch``'s derived model (stock layers of ``keras_module``) carrying the extracted weights."""
        arch = self.choices() if arch is None else arch
        return build_derived(self, arch, keras_module, spec)

    # --- costs -----------------------------------------------------------------------------------------------------
    def expected_cost(self, probs=None):
        """:func:`expected_cost` of this supernet."""
        return expected_cost(self.model, self.space, probs)

    def macs(self, arch=None) -> int:
        """Exact MACs of ``arch``'s derived model."""
        return count(self.derive(arch, name="probe")).macs

    def project_to_target(self, target: float, tol: float = 0.03, max_moves: int = 100_000,
                          latency=None) -> tuple[list[np.ndarray], int, float]:
        """Moves the argmax architecture onto the MACs budget with the least loss of α preference.

        ``latency``: a :class:`search.kernel_latency.KernelLatency` of the space: the budget is then the table's
        milliseconds, each move's cost its exact change of the table's sum
        (:meth:`~search.kernel_latency.KernelLatency.move_costs`, the extra-branch term included).

        MACs are additive over α rows (each filter's expansion, depthwise, SE and projection share; a layer-wise
        row's whole layer), so a move (one row to another choice) changes MACs by a known amount. Greedily, the move
        with the smallest ``(α_current − α_new) / |ΔMACs|`` toward the target is applied — a move that does not cross
        the target when one exists, else one that crosses it but ends closer — until no move gets closer (every
        move shrinks the exact gap, so it ends). A block always keeps one filter. Nothing moves when the argmax is
        already within ``tol``. Returns ``(choice, moves, macs)``.

        Why: the cost loss steers *expected* MACs; per-filter α of one layer receive nearly the same cost gradient,
        so the argmax of a not-fully-converged α can flip whole layers at once and sit far from the target.
        """
        blocks = self.blocks
        logits = [np.asarray(b.dw.tie_broken(np.asarray(b.dw.alpha)), np.float64) for b in blocks]
        choice = [c.copy() for c in self.choices()]
        if latency is None:
            costs, total = [b.choice_macs(s.n_in) for b, s in zip(blocks, self.slots)], self.macs
            deltas = [c - c[np.arange(len(cur)), cur][:, None] for c, cur in zip(costs, choice)]
        else:
            total = lambda c: latency.predict(self.space, c)  # noqa: E731
            deltas = latency.move_costs(self.space, choice)
        macs = total(choice)
        if abs(macs - target) <= tol * target:
            return choice, 0, macs
        moves = 0
        while moves < max_moves and macs != target:
            direction, gap = np.sign(target - macs), abs(target - macs)
            best = None
            for overshoot in (False, True):  # moves that stay on this side of the target first
                for n, (a, delta, cur) in enumerate(zip(logits, deltas, choice)):
                    rows = np.arange(len(cur))
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
            if latency is None:
                deltas[n] = costs[n] - costs[n][np.arange(len(choice[n])), choice[n]][:, None]
                macs += int(round(d))
            else:  # a move changes its block's counts, so that block's move costs
                deltas[n] = latency.move_costs(self.space, choice, n)
                macs += float(d)
            moves += 1
        return choice, moves, total(choice)

    def kernel_distribution(self, arch=None) -> tuple[list[str], np.ndarray, list[str]]:
        """Filters per kernel size per searchable layer (the paper's Fig. 6): ``(layer names, counts (layers ×
        labels), labels)``, labels ``["pruned", "3×3", …]`` ("pruned" only when a layer may prune)."""
        arch = self.choices() if arch is None else arch
        cands = self.space.candidates
        searchable = [b for b in self.blocks if b.searchable]
        labels = (["pruned"] if any(b.dw.allow_none for b in searchable) else []) + [f"{k}×{k}" for k in cands]
        off = len(labels) - len(cands)
        names, counts = [], []
        for block, c in zip(self.blocks, arch):
            if not block.searchable:
                continue
            row = np.zeros(len(labels))
            if block.dw.per_filter:
                np.add.at(row, c + (0 if block.dw.allow_none else off), 1)
            else:
                row[off + int(c[0])] = block.mid_channels
            names.append(block.name)
            counts.append(row)
        return names, np.array(counts), labels

    def mixture(self, arch=None, min_share: float = 0.10) -> dict:
        """The kernel-size mixture of ``arch`` (the paper's Fig. 6 as numbers): per searchable layer the share of
        its filters on each choice (``"pruned"`` included), and how many per-filter layers hold ≥ 2 kernel sizes with
        at least ``min_share`` of the layer's filters each (``mixed_layers`` of ``layers``; layer-wise blocks, which
        choose one kernel for the layer and cannot mix, are listed in ``layerwise_layers`` and not counted)."""
        names, counts, labels = self.kernel_distribution(arch)
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        kernel_cols = [j for j, label in enumerate(labels) if label != "pruned"]
        per_filter = np.array([b.dw.per_filter for b in self.blocks if b.searchable])
        mixed = int(np.sum(((shares[:, kernel_cols] >= min_share).sum(1) >= 2) & per_filter))
        return {"labels": labels, "min_share": min_share, "layers": int(per_filter.sum()), "mixed_layers": mixed,
                "layerwise_layers": [n for n, f in zip(names, per_filter) if not f],
                "per_layer": {n: [round(float(v), 4) for v in row] for n, row in zip(names, shares)}}

    def changed_rows(self, arch, other=None) -> tuple[int, int]:
        """``(filters, layers)`` whose choice differs between ``arch`` and ``other`` (default: the argmax): per-filter
        rows counted as filters, layer-wise rows (one choice for a whole layer) as layers."""
        other = self.choices() if other is None else other
        filters = layers = 0
        for b, a, o in zip(self.blocks, arch, other):
            if not b.searchable:
                continue
            diff = int(np.count_nonzero(np.asarray(a) != np.asarray(o)))
            if b.dw.per_filter:
                filters += diff
            else:
                layers += diff
        return filters, layers
