"""E-DNAS additive kernel merging (García López et al., Eq. 1–2; ACNet/RepVGG-style re-parameterisation).

Training form: every depthwise conv + BN of a spec (``{p}_dw`` → ``{p}_dw_bn``) becomes a :class:`RepDepthwise`
layer — parallel depthwise convs of every ``branches`` size up to the spec's kernel, each with its own BatchNorm,
their outputs summed. Convolution is additive over centred kernels of compatible sizes (Eq. 1), and an inference
BatchNorm is an affine map per channel, so the sum is one depthwise conv of the merged kernel plus a bias (Eq. 2):

    Σ_k BN_k(I * K_k) = I * (⊕_k γ_k/σ_k · K_k) + Σ_k (β_k − γ_k μ_k / σ_k),   σ_k = sqrt(var_k + ε)

:func:`merge` writes that into the plain zoo model of the same spec: ``{p}_dw/kernel`` = the merged kernel,
``{p}_dw_bn`` = the identity plus the bias (γ = 1, β = bias, mean 0, variance 1 − ε). The deployed model is the
spec itself — same layers, same ops, same latency as a model trained with one kernel of that size; only training
differs. Every other weight is copied by name (the training model is built from the builder's own pieces).
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np

from models.builder import Ops, build_block, build_head, build_stem
from models.spec import ModelSpec
from models.walk import walk
from search import PACKAGE

BRANCHES = (1, 3, 5, 7)  # the paper's Fig. 2: 1×1, 3×3, 5×5 and 7×7 kernels summed


@keras.saving.register_keras_serializable(package=PACKAGE)
class RepDepthwise(keras.layers.Layer):
    """Parallel depthwise convs (one per size in ``kernels``, centred, "same" padding) each followed by its own
    BatchNormalization; the outputs are summed.

    TensorFlow's "same" padding centres every odd kernel ≥ 3 on the same input pixel, but not a 1×1 kernel at stride
    2 on an even map (it pads nothing, so its tap sits one pixel up and left of the others'). With ``strides`` > 1
    the 1×1 branch is therefore a 3×3 depthwise conv masked to its centre tap: the same function as a 1×1 kernel
    centred like the others, so the merge stays exact."""

    def __init__(self, kernels, strides=1, bn_epsilon=1e-3, bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.kernels = tuple(sorted(int(k) for k in kernels))
        self.strides, self.bn_epsilon, self.bn_momentum = int(strides), float(bn_epsilon), float(bn_momentum)
        self.dws = [keras.layers.DepthwiseConv2D(self._size(k), strides=self.strides, padding="same", use_bias=False,
                                                 name=f"dw_k{k}") for k in self.kernels]
        self.bns = [keras.layers.BatchNormalization(epsilon=self.bn_epsilon, momentum=self.bn_momentum,
                                                    name=f"bn_k{k}") for k in self.kernels]

    def _size(self, k: int) -> int:
        return 3 if k == 1 and self.strides > 1 else k

    def build(self, input_shape):
        for dw, bn in zip(self.dws, self.bns):
            dw.build(input_shape)
            bn.build(dw.compute_output_shape(input_shape))

    def call(self, x, training=None):
        y = 0.0
        for k, dw, bn in zip(self.kernels, self.dws, self.bns):
            if self._size(k) != k:  # the centre-masked 3×3 form of a 1×1 kernel (class docstring)
                mask = np.zeros((3, 3, 1, 1), np.float32)
                mask[1, 1] = 1.0
                z = keras.ops.depthwise_conv(x, dw.kernel * mask, strides=self.strides, padding="same")
            else:
                z = dw(x)
            y = y + bn(z, training=training)
        return y

    def compute_output_shape(self, input_shape):
        return self.dws[0].compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(kernels=list(self.kernels), strides=self.strides, bn_epsilon=self.bn_epsilon,
                      bn_momentum=self.bn_momentum)
        return config

    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 2: the merged ``(k_max, k_max, C, 1)`` kernel and the ``(C,)`` bias of the inference-mode sum."""
        k_max = self.kernels[-1]
        kernel, bias = None, None
        for k, dw, bn in zip(self.kernels, self.dws, self.bns):
            sigma = np.sqrt(np.asarray(bn.moving_variance.numpy(), np.float64) + bn.epsilon)
            scale = np.asarray(bn.gamma.numpy(), np.float64) / sigma
            w = np.asarray(dw.kernel.numpy(), np.float64) * scale[None, None, :, None]
            if self._size(k) != k:
                w = w[1:2, 1:2]  # the centre tap of the masked 3×3 form
            o = (k_max - k) // 2
            padded = np.zeros((k_max, k_max) + w.shape[2:], np.float64)
            padded[o:o + k, o:o + k] = w
            b = np.asarray(bn.beta.numpy(), np.float64) - scale * np.asarray(bn.moving_mean.numpy(), np.float64)
            kernel = padded if kernel is None else kernel + padded
            bias = b if bias is None else bias + b
        return kernel.astype(np.float32), bias.astype(np.float32)


class RepOps(Ops):
    """The builder's layer factory with every depthwise conv + BN replaced by a :class:`RepDepthwise` of the
    ``branches`` sizes up to the spec's kernel (named ``{name}``, the zoo model's depthwise layer name)."""

    def __init__(self, K, spec: ModelSpec, branches=BRANCHES):
        super().__init__(K, spec)
        self.branches = tuple(sorted(int(k) for k in branches))

    def dw_bn(self, x, k, stride, name, act=None):
        if self.spec.padding != "same" and stride != 1:
            raise ValueError(f"{name}: re-parameterised depthwise convs use 'same' padding")
        kernels = [b for b in self.branches if b <= k and (k - b) % 2 == 0]
        if k not in kernels:
            kernels.append(k)
        x = RepDepthwise(kernels, stride, self.spec.bn.eps, self.spec.bn.momentum, name=name)(x)
        return x if act is None else self.act(x, act, f"{name}_act")


def build_reparam(spec: ModelSpec, branches=BRANCHES, *, input_size: int | None = None, classes: int | None = None,
                  name: str | None = None) -> keras.Model:
    """The training form of ``spec`` (at ``input_size``, with a ``classes``-way classifier; defaults: the spec's):
    the zoo model's layers and names, each depthwise conv + BN a :class:`RepDepthwise` (``{p}_dw``; there is no
    ``{p}_dw_bn``)."""
    if classes is not None:
        spec = dataclasses.replace(spec, head=dataclasses.replace(spec.head, classes=int(classes)))
    o = RepOps(keras, spec, branches)
    w = walk(spec, input_size)
    inputs = keras.layers.Input((w.input_size, w.input_size, spec.input.channels), name="image")
    x = build_stem(o, inputs, True, w.input_size)
    for site in w.blocks:
        x = build_block(o, x, site)
    return keras.Model(inputs, build_head(o, x), name=name or f"{spec.name}_reparam")


def merge(model: keras.Model, spec: ModelSpec) -> dict[str, np.ndarray]:
    """The zoo model's weights (``"layer/variable"``) from a trained :func:`build_reparam` model: merged depthwise
    kernels and their bias as the identity BN (module docstring); every other weight by name."""
    out = {}
    eps = spec.bn.eps
    for layer in model.layers:
        if isinstance(layer, RepDepthwise):
            kernel, bias = layer.merged()
            c = bias.shape[0]
            out[f"{layer.name}/kernel"] = kernel
            out[f"{layer.name}_bn/gamma"] = np.ones(c, np.float32)
            out[f"{layer.name}_bn/beta"] = bias
            out[f"{layer.name}_bn/moving_mean"] = np.zeros(c, np.float32)
            out[f"{layer.name}_bn/moving_variance"] = np.full(c, 1.0 - eps, np.float32)
            continue
        for v in layer.weights:
            out[f"{layer.name}/{v.name}"] = np.asarray(v.numpy())
    return out
