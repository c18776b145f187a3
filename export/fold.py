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
  ``m`` on the padded border and 0 inside (TFLite's pad takes one scalar constant). After QAT (``recipes.qat``)
  both forms are int8.

A spec whose ``input.border`` is ``"black"`` defines the border as raw 0 pixels instead: its zoo model pads the raw
image with zeros before normalising, so ``stem_conv_W'(x) − c`` is exact everywhere with the conv's own zero padding,
and the folded model is the plain graph of ``include_preprocessing=False`` with no op added (keras.applications'
speed with raw pixels in; ``benchmarks/deploy_preprocessing.py``'s ``zoo_fold_black``).

The folded model is one flat graph (``models.builder.build(spec, include_preprocessing="fold")``, layer
``stem_border_pad`` + a ``valid`` stem conv for a ``"mean"`` border) with the weights of :func:`fold_weights`;
:func:`unfold_weights` turns weights trained in that form (QAT) back into the zoo's.

The folded model agrees with the zoo model to float rounding (tests: max|Δ| ≤ 1e-4 relative to the logit scale);
``benchmarks/deploy_preprocessing.py`` times it against the zoo model with the layer and keras.applications.
"""
from __future__ import annotations

import numpy as np

from models.spec import ModelSpec

# fold into the stem; the same with a raw-black border whatever the spec says; keep the preprocess layer; no
# normalisation at all
FOLD_MODES = ("fold", "fold_black", "layer", "none")


def deploy_spec(spec: ModelSpec, preprocessing: str) -> ModelSpec:
    """The spec whose folded graph an export of ``preprocessing`` writes: ``fold_black`` treats the border as raw
    black (``input.border="black"``): no op added for any mean/std, and for a model trained with the ``"mean"``
    border an approximation on the outermost ring of stem outputs (the export's parity check against the exact
    Keras model measures what it costs); every other mode keeps the spec."""
    if preprocessing != "fold_black" or spec.input.border == "black":
        return spec
    import dataclasses
    return dataclasses.replace(spec, input=dataclasses.replace(spec.input, border="black"))


def int8_input_quantization(spec: ModelSpec) -> tuple[float, int] | None:
    """``(scale, zero_point)`` of an int8 input that *is* the normalisation: a caller feeds ``pixel − 128`` and the
    network reads ``(pixel − mean) / std`` — possible when one integral mean and one std serve every channel
    (EfficientNet-Lite: 127, 128 → ``(1/128, −1)``; the graph then takes normalised input), and for every mean and
    std when ``input.border`` is ``"black"`` (``(1, −128)``: the input is the raw pixels of the folded graph, the
    stem's weights normalise and its zero padding is raw black); None otherwise (per-channel statistics or a mean of
    127.5 with a ``"mean"`` border). The
    network's convolutions then pad with the zero point, i.e. a normalised zero: exact with no op added. The export
    gets these parameters from calibration itself (a black and a white image make the calibrated range exactly
    ``[(0 − mean)/std, (255 − mean)/std]``), so the stem's quantized bias is consistent with them: rewriting an
    input's scale after conversion would not be, as the bias was quantized at the calibrated input scale."""
    if spec.input.border == "black":
        return 1.0, -128
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


def _stem_shift(spec: ModelSpec, kernel: np.ndarray) -> np.ndarray:
    """``Σ W' · mean`` per stem output channel for the folded kernel ``W' = W / std``: what the folded conv adds
    over the zoo model's on unpadded pixels (the BatchNorm's moving mean absorbs it)."""
    mean = np.asarray(spec.input.mean, np.float64)
    if spec.stem.depthwise:  # kernel (k, k, in, multiplier); output channel c·m + j sees input channel c only
        return np.einsum("hwcm,c->cm", kernel.astype(np.float64), mean).reshape(-1)
    return np.einsum("hwio,i->o", kernel.astype(np.float64), mean)


def fold_weights(spec: ModelSpec, arrays: dict) -> dict:
    """The zoo weights ``arrays`` (``layer/variable``) of ``spec`` for its folded build
    (``build(spec, include_preprocessing="fold")``): ``stem_conv/kernel / std`` per input channel and the stem
    BatchNorm's moving mean ``μ + Σ W·mean/std``; every other weight as it is. Inverse: :func:`unfold_weights`."""
    std = np.asarray(spec.input.std, np.float64)
    out = dict(arrays)
    kernel = np.asarray(arrays["stem_conv/kernel"], np.float64) / std[None, None, :, None]
    out["stem_conv/kernel"] = kernel.astype(np.float32)
    mean = np.asarray(arrays["stem_bn/moving_mean"], np.float64)
    out["stem_bn/moving_mean"] = (mean + _stem_shift(spec, kernel)).astype(np.float32)
    return out


def unfold_weights(spec: ModelSpec, arrays: dict) -> dict:
    """The zoo weights of ``spec`` from weights of its folded build (e.g. fine-tuned there by QAT): the inverse of
    :func:`fold_weights`."""
    std = np.asarray(spec.input.std, np.float64)
    out = dict(arrays)
    kernel = np.asarray(arrays["stem_conv/kernel"], np.float64)
    out["stem_bn/moving_mean"] = (np.asarray(arrays["stem_bn/moving_mean"], np.float64)
                                  - _stem_shift(spec, kernel)).astype(np.float32)
    out["stem_conv/kernel"] = (kernel * std[None, None, :, None]).astype(np.float32)
    return out


def fold_preprocessing(model, spec: ModelSpec, size: int):
    """A Keras model equal to ``model`` (a zoo model of ``spec`` built at ``size`` *with* its ``preprocess`` layer)
    whose normalisation lives in the stem conv and its BatchNorm (see the module docstring): the flat
    ``build(spec, include_preprocessing="fold")`` with :func:`fold_weights` of ``model``'s weights. ``model``
    itself is left unchanged."""
    from models.builder import build
    from models.weights import assign, named_weights

    folded = build(spec, input_size=size, include_preprocessing="fold", classes=model.output_shape[-1],
                   name=f"{spec.name}_folded")
    assign(folded, fold_weights(spec, named_weights(model)), source=f"model {model.name!r}")
    return folded
