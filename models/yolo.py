"""The YOLOv3-style detection head on any zoo backbone (Redmon & Farhadi 2018): the detector model and the
backbone freezing convention. Anchors, targets, loss, decoding, NMS and prediction are the ``detection`` package,
whose docstring holds the shared conventions (box coordinates, level and anchor order, output layout
``(B, S/stride, S/stride, 3, 5 + C)`` of raw logits ``(tx, ty, tw, th, objectness, classes…)``).

The head (all layer names start with ``yolo_``; stock Keras layers only) follows YOLOv3's top-down path with widths
sized for mobile backbones: ``head_width`` w (default 128) at stride 32, w/2 at stride 16, w/4 at stride 8. Per
level: a conv set of five conv+BN+LeakyReLU(0.1) (1×1 w, 3×3 2w, 1×1 w, 3×3 2w, 1×1 w), then a 3×3 2w conv and a 1×1
output conv with bias of ``3·(5+C)`` channels, reshaped to ``(S, S, 3, 5+C)``. The route to the next finer level is a
1×1 conv (the next width) → 2× nearest upsampling → concatenation with the backbone's feature at that stride. The
objectness biases start at ``log(0.01/0.99)`` so the first steps are not swamped by the negatives.
"""
from __future__ import annotations

import math
import os

import keras as keras3
import numpy as np

from models.builder import build
from models.spec import ModelSpec, SpecError, loads

STRIDES = (8, 16, 32)  # the head's levels, finest first (outputs, targets and anchors follow this order)
DEFAULT_HEAD_WIDTH = 128
OBJECTNESS_PRIOR = 0.01

def _resolve(backbone, weights: str | None) -> tuple[ModelSpec, str | None]:
    """(spec, weights path) from a ModelSpec or a spec ``.json`` path, and None or an ``.npz`` path.

    ``models`` never imports ``zoo`` (DESIGN.md's dependency rule): callers resolve zoo names and weight tags
    themselves (``zoo.get_spec``, ``training.weights.resolve_weights``).
    """
    if isinstance(backbone, ModelSpec):
        spec = backbone
    else:
        path = os.fspath(backbone)
        if not path.endswith(".json") or not os.path.isfile(path):
            raise SpecError("backbone", f"expected a ModelSpec or an existing spec .json path, got {path!r} "
                                        "(resolve zoo names with zoo.get_spec)")
        with open(path, "rb") as f:
            spec = loads(f.read(), path)
    if weights is not None and not (str(weights).endswith(".npz") and os.path.isfile(weights)):
        raise SpecError("weights", f"expected None or an existing .npz path, got {weights!r} "
                                   "(resolve zoo tags with zoo.weights_path)")
    return spec, weights


class _Head:
    """Head layer factories for one Keras module (Keras 3 or tf_keras) and the backbone's BN conventions."""

    def __init__(self, K, spec: ModelSpec, num_classes: int):
        self.L, self.bn, self.num_classes = K.layers, spec.bn, num_classes
        self.slope = {"negative_slope": 0.1} if K is keras3 else {"alpha": 0.1}

    def cbl(self, x, filters: int, k: int, name: str):
        x = self.L.Conv2D(filters, k, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = self.L.BatchNormalization(epsilon=self.bn.eps, momentum=self.bn.momentum, name=f"{name}_bn")(x)
        return self.L.LeakyReLU(**self.slope, name=f"{name}_act")(x)

    def conv_set(self, x, w: int, p: str):
        for i, (filters, k) in enumerate([(w, 1), (2 * w, 3), (w, 1), (2 * w, 3), (w, 1)]):
            x = self.cbl(x, filters, k, f"{p}_set{i}")
        return x

    def output(self, x, w: int, size: int, p: str):
        x = self.cbl(x, 2 * w, 3, f"{p}_out")
        x = self.L.Conv2D(3 * (5 + self.num_classes), 1, name=f"{p}_pred")(x)
        return self.L.Reshape((size, size, 3, 5 + self.num_classes), name=f"{p}_reshape")(x)

    def route(self, x, w: int, p: str):
        x = self.cbl(x, w, 1, f"{p}_route")
        return self.L.UpSampling2D(2, name=f"{p}_up")(x)


def build_detector(backbone, num_classes: int, input_size: int, *, weights: str | None = None,
                   head_width: int | None = None, keras_module=None, name: str | None = None):
    """A YOLOv3-style detector: the backbone's stride 8/16/32 features (``models.builder.build(features=True)``)
    and the head described in the module docstring.

    Args:
        backbone: a :class:`~models.spec.ModelSpec` or a spec ``.json`` path (zoo names are resolved by the caller
            with ``zoo.get_spec``: ``models`` does not import ``zoo``).
        num_classes: C.
        input_size: square input size S, a multiple of 32. Input: raw 0–255 RGB ``(S, S, 3)``.
        weights: backbone weights: None (random) or an ``.npz`` path (a zoo tag resolves with
            ``zoo.weights_path(name, tag)``). Loaded by layer name; arrays of layers the features model lacks (head
            conv, classifier) are ignored.
        head_width: w at stride 32 (default 128; w/2 and w/4 below), a multiple of 4.
        keras_module: ``keras`` (default) or ``tf_keras``.
        name: model name; default ``<backbone>_yolo``.

    Returns:
        A Functional model with outputs ``[(B, S/8, S/8, 3, 5+C), (B, S/16, …), (B, S/32, …)]`` of raw logits.

    Raises:
        SpecError: bad num_classes / input_size / head_width, or a backbone without the three feature strides.
        SpecError: a backbone that is not a spec / spec path, weights that are not an existing ``.npz``.
        models.weights.WeightsError: weights that do not fit.
    """
    if num_classes < 1:
        raise SpecError("num_classes", f"must be >= 1, got {num_classes}")
    if input_size < 32 or input_size % 32:
        raise SpecError("input_size", f"must be a positive multiple of 32 for the YOLO head, got {input_size}")
    width = DEFAULT_HEAD_WIDTH if head_width is None else head_width
    if width < 4 or width % 4:
        raise SpecError("head_width", f"must be a positive multiple of 4, got {head_width}")
    spec, path = _resolve(backbone, weights)
    K = keras3 if keras_module is None else keras_module
    features = build(spec, K, features=True, input_size=input_size, weights=path)
    c8, c16, c32 = features.outputs
    h = _Head(K, spec, num_classes)
    outputs, x, w = [], None, width
    for stride, feature in zip(reversed(STRIDES), (c32, c16, c8)):
        p = f"yolo_s{stride}"
        if x is not None:
            x = h.L.Concatenate(name=f"{p}_concat")([h.route(x, w, f"yolo_s{stride * 2}"), feature])
        else:
            x = feature
        x = h.conv_set(x, w, p)
        outputs.insert(0, h.output(x, w, input_size // stride, p))
        w //= 2
    model = K.Model(features.input, outputs, name=name or f"{spec.name}_yolo")
    prior = math.log(OBJECTNESS_PRIOR / (1.0 - OBJECTNESS_PRIOR))
    for stride in STRIDES:
        layer = model.get_layer(f"yolo_s{stride}_pred")
        bias = np.zeros(3 * (5 + num_classes), np.float32)
        bias[4::5 + num_classes] = prior
        layer.bias.assign(bias)
    return model


def set_backbone_trainable(model, trainable: bool) -> None:
    """Sets ``trainable`` on every layer whose name does not start with ``yolo_`` (BN then runs in inference mode
    when frozen, Keras' fine-tuning convention)."""
    for layer in model.layers:
        if not layer.name.startswith("yolo_"):
            layer.trainable = trainable

