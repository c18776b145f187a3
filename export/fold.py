"""Deploy-time input normalisation folded into the stem conv, so an exported model takes raw 0–255 pixels without
the ``preprocess`` layer's per-pixel MUL + ADD in front of the network.

The zoo model computes ``stem_conv((x − m) / s)`` with ``m``, ``s`` the spec's per-channel ``input.mean`` /
``input.std``. The stem conv has no bias and a BatchNorm follows it, so with ``W' = W / s`` (per input channel) and
``c = Σ W · m / s`` (per output channel)::

    stem_conv_W((x − m) / s) = stem_conv_W'(x) − c      (wherever the kernel sees no padding)

and ``− c`` moves into the BatchNorm's moving mean (``μ' = μ + c``). Where the kernel overlaps the padding the zoo
model sees normalised zeros, i.e. raw pixels equal to ``m``: the border stays exact only if the raw image is padded
with ``m`` rather than 0. So the folded stem pads explicitly and convolves ``valid``:

- no padding at this input size (e.g. a 1×1 or ``valid``-equivalent stem): nothing added;
- one mean for every channel (EfficientNet-Lite ``127``, the CIFAR searches' ``127.5``): one ``PADV2`` with that
  constant;
- per-channel means (the ImageNet ``mean``/``std`` models): ``PAD`` with zeros, then ``ADD`` of a constant that is
  ``m`` on the padded border and 0 inside (TFLite's pad takes one scalar constant).

The folded model agrees with the zoo model to float rounding (tests: max|Δ| ≤ 1e-4 relative to the logit scale);
``benchmarks/deploy_preprocessing.py`` times it against the zoo model with the layer and keras.applications.
"""
from __future__ import annotations

import numpy as np

from models.spec import ModelSpec

FOLD_MODES = ("fold", "layer", "none")  # fold into the stem; keep the preprocess layer; no normalisation at all


def int8_input_quantization(spec: ModelSpec) -> tuple[float, int] | None:
    """``(scale, zero_point)`` of an int8 input that *is* the normalisation: a caller feeds ``pixel − 128`` and the
    network reads ``(pixel − mean) / std`` — possible when one integral mean and one std serve every channel
    (EfficientNet-Lite: 127, 128 → ``(1/128, −1)``); None otherwise (per-channel statistics, a mean of 127.5). The
    network's convolutions then pad with the zero point, i.e. a normalised zero: exact with no op added. The export
    gets these parameters from calibration itself (a black and a white image make the calibrated range exactly
    ``[(0 − mean)/std, (255 − mean)/std]``), so the stem's quantized bias is consistent with them: rewriting an
    input's scale after conversion would not be, as the bias was quantized at the calibrated input scale."""
    mean, std = set(spec.input.mean), set(spec.input.std)
    if len(mean) != 1 or len(std) != 1:
        return None
    m, s = float(next(iter(mean))), float(next(iter(std)))
    if not m.is_integer() or not 0 <= m <= 255 or s <= 0:
        return None
    return 1.0 / s, int(m) - 128


def same_padding(n: int, k: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (before, after) of one spatial axis: the extra pixel goes after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2


def stem_padding(spec: ModelSpec, size: int) -> tuple[int, int]:
    """(before, after) padding of the stem conv at input ``size`` (both axes alike), as the builder pads it."""
    k, stride = spec.stem.kernel, spec.stem.stride
    if spec.padding == "same" or k == 1 or stride == 1:
        return same_padding(size, k, stride)
    return k // 2, k // 2  # symmetric (explicit ZeroPadding2D in the builder)


def fold_preprocessing(model, spec: ModelSpec, size: int):
    """A Keras model equal to ``model`` (a zoo model of ``spec`` built at ``size`` *with* its ``preprocess`` layer)
    whose normalisation lives in the stem conv and its BatchNorm (see the module docstring). ``model`` itself is
    left unchanged."""
    import keras
    import tensorflow as tf

    from models.builder import build

    mean = np.asarray(spec.input.mean, np.float32)
    std = np.asarray(spec.input.std, np.float32)
    plain = build(spec, input_size=size, include_preprocessing=False, classes=model.output_shape[-1],
                  name=f"{spec.name}_folded_src")
    plain.set_weights(model.get_weights())
    conv, bn = plain.get_layer("stem_conv"), plain.get_layer("stem_bn")
    kernel = np.asarray(conv.kernel)  # (k, k, in, out)
    before, after = stem_padding(spec, size)

    class BorderPad(keras.layers.Layer):
        """Pads height and width by (before, after) with the raw value of a normalised zero."""

        def call(self, x):
            pads = [[0, 0], [before, after], [before, after], [0, 0]]
            if np.all(mean == mean[0]):
                return tf.pad(x, pads, constant_values=float(mean[0]))
            border = np.ones((1, size + before + after, size + before + after, 1), np.float32) * mean
            border[:, before:before + size, before:before + size, :] = 0.0
            return tf.pad(x, pads) + tf.constant(border)

    inputs = keras.Input((size, size, spec.input.channels), name="image")
    x = BorderPad(name="stem_border_pad")(inputs) if before or after else inputs
    if spec.stem.depthwise:  # kernel (k, k, in, multiplier); output channel c·m + j sees input channel c only
        folded = keras.layers.DepthwiseConv2D(conv.kernel_size, strides=conv.strides, padding="valid",
                                              depth_multiplier=conv.depth_multiplier, use_bias=False, name="stem_conv")
        shift = np.einsum("hwcm,c->cm", kernel, mean / std).reshape(-1)
    else:
        folded = keras.layers.Conv2D(conv.filters, conv.kernel_size, strides=conv.strides, padding="valid",
                                     use_bias=False, name="stem_conv")
        shift = np.einsum("hwio,i->o", kernel, mean / std)
    y = folded(x)
    folded.set_weights([kernel / std[None, None, :, None]])
    bn.moving_mean.assign(np.asarray(bn.moving_mean) + shift)
    rest = keras.Model(bn.input, plain.output, name=f"{spec.name}_body")
    return keras.Model(inputs, rest(y), name=f"{spec.name}_folded")
