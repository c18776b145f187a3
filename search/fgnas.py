"""FGNAS supernet (Kim et al., "Fine-Grained Neural Architecture Search"): per-channel operation gates with a
deterministic straight-through estimator and an exact resource regularizer.

- :func:`gate` is paper Eq. 5: ``g = 1[ψ_on > ψ_off]`` in the forward pass, ``softmax_on(ψ)`` in the backward pass
  (no noise), written ``hard + (soft − stop_gradient(soft))`` so the forward value is exactly 0 or 1.
- :class:`GatedConv` (a searched ``conv`` block) and :class:`GatedMBConv` (a searched ``ir`` block: the depthwise
  conv is the operation) compute every operation at full width and return ``(1/M) Σ_i G_i ⊙ o_i(x)`` (Eq. 1–2);
  operations that share a kernel size share its conv and BN and differ in activation (paper Fig. 3). Gates start
  on (``gate_init`` margin). A layer always keeps at least one gate on (its most confident one), so no layer
  disconnects the network.
- :class:`FgnasSupernet` (model + :class:`search.fgnas_space.FgnasSpace`) is the :class:`search.protocol.Supernet`:
  the hard gates are the architecture; ``derive`` gives the zoo spec, ``extract`` the derived model's weights — each
  operation's channels become a branch, a channel on in several operations appears in each of those branches and
  the sum and the 1/M fold into the next linear layer's input rows (next conv, expansion or projection, or the
  classifier). The supernet in inference mode equals the derived model (test, max|Δ| ≤ 1e-4).
- :meth:`FgnasSupernet.resource` is the regularizer R(ψ) of Eq. 8–10 as a differentiable tensor whose forward value
  is the *exact* params or MACs of the derived model (``models.counting.count``): per operation
  ``φ_i(γ_in, γ_out,i)`` with ``γ_out,i = ‖G_i‖₁`` and, for a layer fed by a searched conv layer, ``γ_in`` that
  layer's deployed width ``Σ_i ‖G_i‖₁`` (``input_count="deployed"``). The paper's Eq. 10 counts a live input
  channel once (``‖h(Σ_i G_i)‖₁``, h binary forward / identity backward: ``input_count="paper"``); the gradient is
  the same, but the derived model reads a compositional channel once per branch, so only the deployed count is
  exact. The paper's third resource, latency as per-condition affine functions of MACs fitted to measured LiteRT
  latency, is not implemented yet (issue 17, E3).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from models.builder import Ops, build_block, build_head, build_stem
from models.spec import ModelSpec, Provenance
from models.walk import out_size, walk
from search import PACKAGE
from search.fgnas_space import FgnasSpace
from search.protocol import build_derived
from search.supernet import activation

BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")
INPUT_COUNTS = ("deployed", "paper")
# The paper's Table 7 ablation of the gating function: "full" (FGNAS: per channel any subset of operations, pruning
# when none), "no_prune" (type 1: several operations per channel, no pruning: a channel whose gates are all off keeps
# its most confident operation) and "one_op" (type 2: pruning with one operation per channel: each channel's
# operation is its most confident one, straight-through over a softmax of the margins; its gate decides on/off).
GATINGS = ("full", "no_prune", "one_op")


def gate(psi):
    """Straight-through gate of Eq. 5 on ``psi[..., 0] = ψ_on``, ``psi[..., 1] = ψ_off``: forward exactly binary,
    backward the gradient of ``softmax_on(ψ) = σ(ψ_on − ψ_off)``."""
    soft = ops.sigmoid(psi[..., 0] - psi[..., 1])
    hard = ops.cast(psi[..., 0] > psi[..., 1], soft.dtype)
    return hard + (soft - ops.stop_gradient(soft))


def binarize(x):
    """h of Eq. 10: 1 where ``x`` is non-zero in the forward pass, the identity in the backward pass."""
    return ops.cast(ops.not_equal(x, 0), x.dtype) + (x - ops.stop_gradient(x))


def _out(n, stride):
    return None if n is None else out_size(n, stride)


class _Gated(keras.layers.Layer):
    """Shared parts of the gated layers: the operations ``(k, act)`` kernel-major, their gates ψ ``(M, C, 2)``, BN
    settings, one PReLU per PReLU operation."""

    def __init__(self, channels, kernels=(3,), acts=("relu",), strides=1, bn_epsilon=1e-3, bn_momentum=0.99,
                 gate_init=2.0, gating="full", **kwargs):
        super().__init__(**kwargs)
        if gating not in GATINGS:
            raise ValueError(f"gating: one of {GATINGS}, got {gating!r}")
        self.gating = gating
        self.channels, self.strides = int(channels), int(strides)
        self.kernels, self.acts = tuple(int(k) for k in kernels), tuple(acts)
        self.bn_epsilon, self.bn_momentum, self.gate_init = float(bn_epsilon), float(bn_momentum), float(gate_init)
        self.ops = tuple((k, a) for k in self.kernels for a in self.acts)
        self.bns = [self._bn(f"bn_k{k}") for k in self.kernels]
        self.prelus = {k: keras.layers.PReLU(shared_axes=[1, 2], name=f"prelu_k{k}") for k in self.kernels
                       if "prelu" in self.acts}

    def _bn(self, name):
        return keras.layers.BatchNormalization(epsilon=self.bn_epsilon, momentum=self.bn_momentum, name=name)

    def _build_gates(self):
        init = np.zeros((len(self.ops), self.channels, 2), np.float32)
        init[..., 0] = self.gate_init
        self.psi = self.add_weight(shape=init.shape, initializer=keras.initializers.Constant(init), name="psi")

    def gates(self):
        """``(M, C)`` straight-through gates under the layer's ``gating``; a layer with every gate off keeps its
        most confident one."""
        g = gate(self.psi)
        margins = self.psi[..., 0] - self.psi[..., 1]
        if self.gating != "full":
            best = ops.one_hot(ops.argmax(margins, axis=0), len(self.ops), axis=0, dtype=g.dtype)  # (M, C)
            if self.gating == "no_prune":
                off = ops.sum(ops.stop_gradient(g), axis=0, keepdims=True) == 0
                g = ops.where(off, g + ops.stop_gradient(best), g)
            else:
                p = ops.softmax(margins, axis=0)
                g = g * (best + (p - ops.stop_gradient(p)))
        margin = ops.reshape(margins, (-1,))
        keep = ops.reshape(ops.one_hot(ops.argmax(margin), margin.shape[0], dtype=g.dtype), g.shape)
        return ops.where(ops.sum(ops.stop_gradient(g)) > 0, g, g + ops.stop_gradient(keep))

    def hard_gates(self) -> np.ndarray:
        """The architecture of this layer: ``(M, C)`` booleans (the forward value of :meth:`gates`)."""
        return np.asarray(ops.convert_to_numpy(self.gates())) > 0.5

    def _mix(self, branches_by_kernel, g):
        """``(1/M) Σ_i g_i ⊙ act_i(z_k(i))`` over the operations."""
        y, i = 0.0, 0
        for k, z in zip(self.kernels, branches_by_kernel):
            for a in self.acts:
                y = y + g[i] * activation(z, a, self.prelus.get(k))
                i += 1
        return y / float(len(self.ops))

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kernels=list(self.kernels), acts=list(self.acts), strides=self.strides,
                      bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum, gate_init=self.gate_init,
                      gating=self.gating)
        return config

    @staticmethod
    def _bn_arrays(bn, idx=None):
        out = {}
        for v in BN_VARIABLES:
            a = np.asarray(getattr(bn, v).numpy())
            out[v] = a if idx is None else a[idx]
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedConv(_Gated):
    """A searched plain conv block: per kernel size a k×k conv (``channels`` filters) + BN, per operation an
    activation and a per-channel gate; the gated mean of Eq. 1; then the block's 2×2 ``pool``."""

    def __init__(self, channels, kernels=(3,), acts=("relu",), strides=1, pool=None, **kwargs):
        super().__init__(channels, kernels, acts, strides, **kwargs)
        self.pool = pool
        self.convs = [keras.layers.Conv2D(self.channels, k, strides=self.strides, padding="same", use_bias=False,
                                          name=f"conv_k{k}") for k in self.kernels]

    def build(self, input_shape):
        self.in_channels = int(input_shape[-1])
        for conv, bn in zip(self.convs, self.bns):
            conv.build(input_shape)
            out = conv.compute_output_shape(input_shape)
            bn.build(out)
            if self.prelus:
                self.prelus[conv.kernel_size[0]].build(out)
        self._build_gates()

    def call(self, x, training=None):
        z = [bn(conv(x), training=training) for conv, bn in zip(self.convs, self.bns)]
        y = self._mix(z, self.gates())
        if self.pool == "max":
            y = ops.max_pool(y, 2, 2, padding="same")
        elif self.pool == "avg":
            y = ops.average_pool(y, 2, 2, padding="same")
        return y

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides * (2 if self.pool else 1)
        return (b, _out(h, s), _out(w, s), self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(pool=self.pool)
        return config

    def extract_block(self, gates, name, in_map, in_scale, groups):
        """Derived weights of this block (layer prefix ``name``): per branch ``(op, channel indices)`` of
        ``groups`` the conv's input rows ``in_map`` (scaled by ``in_scale``, the previous layer's 1/M) and output
        columns, its BN and PReLU slices."""
        out = {}
        for g, (i, idx) in enumerate(groups):
            k, a = self.ops[i]
            ki = self.kernels.index(k)
            p = name if len(groups) == 1 else f"{name}_g{g}"
            w = np.asarray(self.convs[ki].kernel.numpy())[:, :, in_map, :][..., idx] * in_scale
            out[f"{p}_conv/kernel"] = w
            out.update({f"{p}_bn/{v}": x for v, x in self._bn_arrays(self.bns[ki], idx).items()})
            if a == "prelu":
                out[f"{p}_act/alpha"] = np.asarray(self.prelus[k].alpha.numpy())[..., idx]
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedMBConv(_Gated):
    """A searched inverted residual: 1×1 expansion (``channels``) → BN → ``act`` (shared), then per kernel size a
    k×k depthwise conv + BN, per operation an activation and a per-channel gate, the gated mean of Eq. 1, the 1×1
    projection → BN and the residual add (stride 1, same width, ``skip``)."""

    def __init__(self, channels, filters, kernels=(3,), acts=("relu6",), strides=1, act="relu6", skip=True,
                 **kwargs):
        super().__init__(channels, kernels, acts, strides, **kwargs)
        self.filters, self.act, self.skip = int(filters), act, bool(skip)
        self.expand_conv = keras.layers.Conv2D(self.channels, 1, use_bias=False, name="expand_conv")
        self.expand_bn = self._bn("expand_bn")
        self.dws = [keras.layers.DepthwiseConv2D(k, strides=self.strides, padding="same", use_bias=False,
                                                 name=f"dw_k{k}") for k in self.kernels]
        self.project_conv = keras.layers.Conv2D(self.filters, 1, use_bias=False, name="project_conv")
        self.project_bn = self._bn("project_bn")

    def build(self, input_shape):
        self.in_channels = int(input_shape[-1])
        self.expand_conv.build(input_shape)
        mid = tuple(input_shape[:-1]) + (self.channels,)
        self.expand_bn.build(mid)
        for dw, bn in zip(self.dws, self.bns):
            dw.build(mid)
            out = dw.compute_output_shape(mid)
            bn.build(out)
            if self.prelus:
                self.prelus[dw.kernel_size[0]].build(out)
        self.project_conv.build(out)
        self.project_bn.build(tuple(out[:-1]) + (self.filters,))
        self.residual = self.skip and self.strides == 1 and self.in_channels == self.filters
        self._build_gates()

    def call(self, x, training=None):
        y = activation(self.expand_bn(self.expand_conv(x), training=training), self.act)
        z = [bn(dw(y), training=training) for dw, bn in zip(self.dws, self.bns)]
        y = self.project_bn(self.project_conv(self._mix(z, self.gates())), training=training)
        return y + x if self.residual else y

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, _out(h, self.strides), _out(w, self.strides), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, act=self.act, skip=self.skip)
        return config

    def extract_block(self, gates, name, in_map, in_scale, groups):
        """Derived weights: per branch the expansion's input rows ``in_map`` (× ``in_scale``) and output columns,
        its BN, the depthwise kernel and BN (and PReLU) of the branch's channels; the projection's input rows are
        the branches' channels in order, × 1/M."""
        out, rows = {}, []
        expand = np.asarray(self.expand_conv.kernel.numpy())[:, :, in_map, :] * in_scale
        for g, (i, idx) in enumerate(groups):
            k, a = self.ops[i]
            ki = self.kernels.index(k)
            p = name if len(groups) == 1 else f"{name}_g{g}"
            out[f"{p}_expand_conv/kernel"] = expand[..., idx]
            out.update({f"{p}_expand_bn/{v}": x for v, x in self._bn_arrays(self.expand_bn, idx).items()})
            out[f"{p}_dw/kernel"] = np.asarray(self.dws[ki].kernel.numpy())[:, :, idx, :]
            out.update({f"{p}_dw_bn/{v}": x for v, x in self._bn_arrays(self.bns[ki], idx).items()})
            if a == "prelu":
                out[f"{p}_dw_act/alpha"] = np.asarray(self.prelus[k].alpha.numpy())[..., idx]
            rows.append(idx)
        w = np.asarray(self.project_conv.kernel.numpy())
        out[f"{name}_project_conv/kernel"] = w[:, :, np.concatenate(rows), :] / float(len(self.ops))
        out.update({f"{name}_project_bn/{v}": x for v, x in self._bn_arrays(self.project_bn).items()})
        return out


def build_supernet(space: FgnasSpace, *, gate_init: float = 2.0, gating: str = "full",
                   name: str | None = None) -> keras.Model:
    """The supernet of ``space`` as a Keras 3 Functional model on raw 0–255 RGB: the builder's preprocessing, stem,
    fixed blocks and head (the derived model's layers and names) and one gated layer per searched block, named like
    the block (``s{i}_b{j}``); ``gating`` is one of :data:`GATINGS`."""
    spec = space.backbone
    o = Ops(keras, spec)
    searched = {layer.name: layer for layer in space.layers()}
    inputs = keras.layers.Input((spec.input.size, spec.input.size, spec.input.channels), name="image")
    x = build_stem(o, inputs, True, spec.input.size)
    common = dict(kernels=space.kernels, acts=space.acts, bn_epsilon=spec.bn.eps, bn_momentum=spec.bn.momentum,
                  gate_init=gate_init, gating=gating)
    for site in walk(spec).blocks:
        layer, b = searched.get(site.name), site.block
        if layer is None:
            x = build_block(o, x, site)
        elif layer.kind == "conv":
            x = GatedConv(layer.channels, strides=b.stride, pool=b.pool, name=site.name, **common)(x)
        else:
            x = GatedMBConv(layer.channels, b.filters, strides=b.stride, act=b.act, skip=b.skip, name=site.name,
                            **common)(x)
    return keras.Model(inputs, build_head(o, x), name=name or f"{spec.name}_fgnas_supernet")


def gated_layers(model: keras.Model) -> list[_Gated]:
    return [layer for layer in model.layers if isinstance(layer, _Gated)]


def gate_variables(model: keras.Model) -> list:
    """The gate parameters ψ (trained only in the search phase)."""
    return [layer.psi for layer in gated_layers(model)]


def weight_variables(model: keras.Model) -> list:
    """Trainable variables other than ψ."""
    psi = {id(v) for v in gate_variables(model)}
    return [v for v in model.trainable_variables if id(v) not in psi]


class FgnasSupernet:
    """An FGNAS supernet: the Keras model and its space; a :class:`search.protocol.Supernet` whose architecture is
    the list of hard gate arrays (``None``: the current gates)."""

    def __init__(self, model: keras.Model, space: FgnasSpace):
        self.model, self.space = model, space
        self.layers = space.layers()
        by_name = {layer.name: layer for layer in gated_layers(model)}
        self.gated = [by_name[layer.name] for layer in self.layers]
        self._terms = {r: space.cost_terms(r) for r in ("params", "macs")}

    # --- architecture ---------------------------------------------------------------------------------------------
    def arch(self) -> list[np.ndarray]:
        """The current hard gates, one ``(M, C)`` boolean array per searched layer."""
        return [g.hard_gates() for g in self.gated]

    def set_arch(self, arch, margin: float | None = None) -> None:
        """Sets ψ so that the hard gates are ``arch`` (on: ``ψ_on − ψ_off = margin``, off: ``−margin``; default the
        layers' ``gate_init``)."""
        for g, a in zip(self.gated, self.space.check_arch(arch)):
            m = g.gate_init if margin is None else margin
            psi = np.zeros(g.psi.shape, np.float32)
            psi[..., 0] = np.where(a, m, -m)
            g.psi.assign(psi)

    def derive(self, arch=None, *, name: str = "fgnas_derived", provenance: Provenance | None = None) -> ModelSpec:
        return self.space.derive(self.arch() if arch is None else arch, name=name, provenance=provenance)

    def extract(self, arch=None, spec: ModelSpec | None = None) -> dict[str, np.ndarray]:
        """The derived model's weights: fixed layers by name, each searched layer's branches (module docstring)."""
        arch = self.space.check_arch(self.arch() if arch is None else arch)
        spec = self.derive(arch) if spec is None else spec
        gated = {layer.name: (layer, g, a) for layer, g, a in zip(self.layers, self.gated, arch)}
        out, in_map, in_scale = {}, None, 1.0
        for layer in self.model.layers:
            hit = gated.get(layer.name)
            if hit is not None:
                info, g, a = hit
                groups = self.space.branches(a)
                rows = np.arange(g.in_channels) if in_map is None else in_map
                out.update(g.extract_block(a, layer.name, rows, in_scale, groups))
                if info.kind == "conv":
                    in_map, in_scale = np.concatenate([idx for _, idx in groups]), 1.0 / len(self.space.ops)
                else:
                    in_map, in_scale = None, 1.0
                continue
            for w in layer.weights:
                value = np.asarray(w.numpy())
                if in_map is not None and w.name == "kernel":
                    # the first linear layer after a searched conv block (validated: the head conv or classifier)
                    value = (value[:, :, in_map, :] if value.ndim == 4 else value[in_map]) * in_scale
                out[f"{layer.name}/{w.name}"] = value
            if any(w.name == "kernel" for w in layer.weights):
                in_map, in_scale = None, 1.0
        return out

    def derived_model(self, arch=None, keras_module=None, *, spec: ModelSpec | None = None):
        arch = self.arch() if arch is None else arch
        return build_derived(self, arch, keras_module, spec)

    # --- the regularizer R(ψ) ------------------------------------------------------------------------------------
    def resource(self, resource: str = "macs", input_count: str = "deployed", latency=None):
        """R(ψ) as a scalar tensor: params or MACs (forward value: the exact cost of the current hard gates with
        ``input_count="deployed"``), or ``"latency"``: the :class:`search.fgnas_latency.AffineLatency` prediction
        ``fixed + Σ a_c·h(γ_out,i) + b_c·MACs_i`` (h of Eq. 10: binary forward, identity backward)."""
        if input_count not in INPUT_COUNTS:
            raise ValueError(f"input_count: one of {INPUT_COUNTS}, got {input_count!r}")
        if resource == "latency":
            return self._latency(latency, input_count)
        terms, head_coef, fixed = self._terms[resource]
        total, prev = ops.convert_to_tensor(float(fixed)), None
        for layer, (a, b), g in zip(self.layers, terms, self.gated):
            gates = g.gates()
            gamma = ops.sum(gates, axis=1)
            if layer.chained:
                total = total + ops.sum(gamma * (ops.convert_to_tensor(a.astype("float32"))
                                                 + ops.convert_to_tensor(b.astype("float32")) * prev))
            else:
                total = total + ops.sum(gamma * ops.convert_to_tensor(a.astype("float32")))
            prev = self._width(gates, input_count) if layer.kind == "conv" else None
        if head_coef:
            total = total + head_coef * prev
        return total

    @staticmethod
    def _width(gates, input_count):
        if input_count == "deployed":
            return ops.sum(gates)
        return ops.sum(binarize(ops.sum(gates, axis=0)))

    def cost(self, arch=None, resource: str = "macs") -> int:
        """Exact params or MACs of the derived model of ``arch`` (default: the current gates)."""
        return self.space.cost(self.arch() if arch is None else arch, resource)

    def _latency(self, latency, input_count: str):
        if latency is None:
            raise ValueError("resource='latency' needs a latency model (search.fgnas_latency.AffineLatency)")
        coefs = latency.layer_coefs(self.space)
        terms, _, _ = self._terms["macs"]
        total, prev = ops.convert_to_tensor(float(latency.fixed_ms)), None
        for layer, (a, b), g, cs in zip(self.layers, terms, self.gated, coefs):
            gates = g.gates()
            gamma = ops.sum(gates, axis=1)
            per = ops.convert_to_tensor(a.astype("float32"))
            if layer.chained:
                per = per + ops.convert_to_tensor(b.astype("float32")) * prev
            macs = gamma * per
            ca = ops.convert_to_tensor(np.array([c[0] for c in cs], np.float32))
            cb = ops.convert_to_tensor(np.array([c[1] for c in cs], np.float32))
            total = total + float(latency.scale) * ops.sum(ca * binarize(gamma) + cb * macs)
            prev = self._width(gates, input_count) if layer.kind == "conv" else None
        return total
