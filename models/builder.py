"""Builds a Functional model of stock Keras layers from a :class:`~models.spec.ModelSpec`.

The Keras module is a parameter (``keras`` for Keras 3, ``tf_keras`` for the twin that tfmot quantizes, DESIGN.md §2);
the same spec gives the same layer names in both, so weights move by name (see :mod:`models.weights`).

Layer names: ``preprocess``, ``stem_*``, ``s{stage}_b{block}_*`` (branch ``g{i}`` of a mixed-kernel block:
``s{stage}_b{block}_g{i}_*``), ``head_*``, ``pool``, ``dropout``, ``classifier``. A plain ``conv`` block is
``{p}_conv|bn|act`` (or its branches ``{p}_g{i}_conv|bn|act`` and ``{p}_concat``) and ``{p}_pool``.

Mixed kernels use the QAT-safe branch form of DESIGN.md §3: per kernel size, ``1×1 expand (that group's filters) →
BN → act → DepthwiseConv2D(k) → BN → act``, then ``Concatenate`` and the 1×1 projection. A grouped expansion
(``expand_groups`` g, MixNet's ``a1.1``) becomes a g-grouped 1×1 conv per branch: each branch draws its channels
equally from every input group. Parameters and MACs equal MixNet's single grouped conv; the channel order differs
from timm's MixNet (no weights are converted from there), and no channel slicing is needed.
"""
from __future__ import annotations

import operator

import keras as keras3
import numpy as np

from models.spec import MAX_CLASSES, ConvSpec, MBConvSpec, ModelSpec, ShuffleSpec, SpecError
from models.walk import ENDPOINT_STRIDES, Site, walk
from models.weights import assign, read_npz

__all__ = ["ENDPOINT_STRIDES", "Ops", "build", "build_block", "build_head", "build_preprocess", "build_stem"]


class Ops:
    """Layer factories bound to one Keras module and one spec's BN and padding conventions.

    Every building piece (:func:`build_preprocess`, :func:`build_stem`, :func:`build_block`, :func:`build_head`)
    takes one, so a supernet that builds its stem and head with them gets the zoo model's layers and names.

    Args:
        K: the Keras module (``keras`` or ``tf_keras``).
        spec: the spec whose ``bn`` (epsilon, momentum), ``padding`` (``same``/``symmetric``), input statistics,
            stem and head the pieces follow.
    """

    def __init__(self, K, spec: ModelSpec):
        self.K, self.L, self.spec = K, K.layers, spec

    def pad(self, x, k, stride, name):
        """Returns (x, padding) such that a k×k conv with ``stride`` matches the spec's padding convention."""
        if self.spec.padding == "same" or k == 1 or stride == 1:
            # For odd k and stride 1, TF "same" pads k//2 on each side: identical to symmetric padding.
            return x, "same"
        return self.L.ZeroPadding2D(k // 2, name=f"{name}_pad")(x), "valid"

    def conv(self, x, filters, k, stride, name, groups=1, bias=False):
        x, padding = self.pad(x, k, stride, name)
        return self.L.Conv2D(filters, k, strides=stride, padding=padding, groups=groups, use_bias=bias, name=name)(x)

    def dw(self, x, k, stride, name):
        x, padding = self.pad(x, k, stride, name)
        return self.L.DepthwiseConv2D(k, strides=stride, padding=padding, use_bias=False, name=name)(x)

    def bn(self, x, name):
        bn = self.spec.bn
        return self.L.BatchNormalization(epsilon=bn.eps, momentum=bn.momentum, name=name)(x)

    def act(self, x, act, name):
        if act == "relu":
            return self.L.ReLU(name=name)(x)
        if act == "relu6":
            return self.L.ReLU(6.0, name=name)(x)
        if act == "swish":
            return self.L.Activation("swish", name=name)(x)
        if act == "hswish":
            # x · relu6(x + 3) / 6 from stock layers: tf_keras has no hard_swish activation, and the same graph in
            # both frameworks keeps the twin exact.
            gate = self.L.Rescaling(1.0 / 6.0, offset=0.5, name=f"{name}_affine")(x)
            gate = self.L.ReLU(1.0, name=f"{name}_gate")(gate)
            return self.L.Multiply(name=name)([x, gate])
        if act == "tanh":
            return self.L.Activation("tanh", name=name)(x)
        if act == "prelu":  # one slope per channel (Keras initialises it to 0: ReLU)
            return self.L.PReLU(shared_axes=[1, 2], name=name)(x)
        raise SpecError("act", f"unknown activation {act!r}")

    def conv_bn_act(self, x, filters, k, stride, name, act=None, groups=1):
        x = self.bn(self.conv(x, filters, k, stride, f"{name}_conv", groups=groups), f"{name}_bn")
        return x if act is None else self.act(x, act, f"{name}_act")

    def dw_bn(self, x, k, stride, name, act=None):
        x = self.bn(self.dw(x, k, stride, name), f"{name}_bn")
        return x if act is None else self.act(x, act, f"{name}_act")


def _mbconv(o: Ops, x, site: Site):
    b, p = site.block, site.name
    branches = []
    for g, (k, c, act) in enumerate(zip(b.kernels, b.split, b.branch_acts())):
        bp = p if len(b.kernels) == 1 else f"{p}_g{g}"
        y = x
        if b.expand_channels is not None:
            y = o.conv_bn_act(x, c, 1, 1, f"{bp}_expand", b.act, groups=b.expand_groups)
        branches.append(o.dw_bn(y, k, b.stride, f"{bp}_dw", act))
    y = branches[0] if len(branches) == 1 else o.L.Concatenate(name=f"{p}_concat")(branches)
    if b.se_channels:
        mid = sum(b.split)
        s = o.L.GlobalAveragePooling2D(keepdims=True, name=f"{p}_se_pool")(y)
        s = o.L.Conv2D(b.se_channels, 1, name=f"{p}_se_reduce")(s)
        s = o.act(s, b.act, f"{p}_se_act")
        s = o.L.Conv2D(mid, 1, name=f"{p}_se_expand")(s)
        s = o.L.Activation("sigmoid", name=f"{p}_se_gate")(s)
        y = o.L.Multiply(name=f"{p}_se_scale")([y, s])
    y = o.conv_bn_act(y, b.filters, 1, 1, f"{p}_project", None, groups=b.project_groups)
    if site.residual:
        y = o.L.Add(name=f"{p}_add")([x, y])
    return y


def _conv(o: Ops, x, site: Site):
    """Plain conv block: per branch k×k conv → BN → act (``{p}_conv|bn|act``, branch ``g{i}``: ``{p}_g{i}_…``),
    ``{p}_concat``, then the 2×2/2 ``{p}_pool``."""
    b, p = site.block, site.name
    branches = [o.conv_bn_act(x, c, k, b.stride, p if len(b.kernels) == 1 else f"{p}_g{g}", act)
                for g, (k, c, act) in enumerate(zip(b.kernels, b.split, b.branch_acts()))]
    y = branches[0] if len(branches) == 1 else o.L.Concatenate(name=f"{p}_concat")(branches)
    if b.pool == "max":
        y = o.L.MaxPooling2D(2, 2, padding="same", name=f"{p}_pool")(y)
    elif b.pool == "avg":
        y = o.L.AveragePooling2D(2, 2, padding="same", name=f"{p}_pool")(y)
    return y


def _shuffle_branch(o: Ops, x, b: ShuffleSpec, out_ch: int, p: str):
    """SPOS main branch: choice_k = 1×1 → dw k → 1×1; choice_x = three (dw 3×3 → 1×1) units."""
    if b.choice == "x":
        y = x
        for i, (stride, width) in enumerate([(b.stride, b.mid_channels), (1, b.mid_channels), (1, out_ch)]):
            y = o.dw_bn(y, 3, stride, f"{p}_dw{i}")
            y = o.conv_bn_act(y, width, 1, 1, f"{p}_pw{i}", b.act)
        return y
    k = int(b.choice)
    y = o.conv_bn_act(x, b.mid_channels, 1, 1, f"{p}_pw0", b.act)
    y = o.dw_bn(y, k, b.stride, f"{p}_dw")
    return o.conv_bn_act(y, out_ch, 1, 1, f"{p}_pw1", b.act)


def _shuffle(o: Ops, x, site: Site):
    b, p, in_ch, size = site.block, site.name, site.in_ch, site.in_size
    if b.stride == 2:
        k = 3 if b.choice == "x" else int(b.choice)
        proj = o.dw_bn(x, k, 2, f"{p}_proj_dw")
        proj = o.conv_bn_act(proj, in_ch, 1, 1, f"{p}_proj_pw", b.act)
        main = _shuffle_branch(o, x, b, b.filters - in_ch, p)
        return o.L.Concatenate(name=f"{p}_concat")([proj, main])
    # Channel split + shuffle as in SPOS: even channels pass through, odd ones enter the main branch. Done with
    # Reshape/Cropping2D (stock layers; RESHAPE + STRIDED_SLICE in TFLite) rather than slicing ops.
    half = in_ch // 2
    pairs = o.L.Reshape((size * size * half, 2, 1), name=f"{p}_pairs")(x)
    even = o.L.Cropping2D(((0, 0), (0, 1)), name=f"{p}_even_crop")(pairs)
    odd = o.L.Cropping2D(((0, 0), (1, 0)), name=f"{p}_odd_crop")(pairs)
    even = o.L.Reshape((size, size, half), name=f"{p}_even")(even)
    odd = o.L.Reshape((size, size, half), name=f"{p}_odd")(odd)
    main = _shuffle_branch(o, odd, b, b.filters - half, p)
    return o.L.Concatenate(name=f"{p}_concat")([even, main])


def build_preprocess(o: Ops, x):
    """The ``preprocess`` layer on raw 0–255 input ``x``: ``(x − mean) / std`` with the spec's input statistics."""
    inp = o.spec.input
    return o.L.Rescaling(scale=[1.0 / s for s in inp.std], offset=[-m / s for m, s in zip(inp.mean, inp.std)],
                         name="preprocess")(x)


_MEAN_PAD = {}


def mean_pad_layer(K):
    """The ``MeanPad`` layer class of Keras module ``K``: pads height and width by ``(before, after)`` with a raw
    pixel value per channel (``mean``), i.e. with a normalised zero. One value for every channel is one
    ``tf.pad`` (TFLite ``PADV2``); per-channel values are a zero ``PAD`` plus a constant that is the mean on the
    border and 0 inside (``ADD``): TFLite pads with one scalar. Padding each channel on its own (``SPLIT``, three
    ``PADV2``, ``CONCATENATION``) measured ×1.34 float / ×1.40 int8 of keras.applications' MobileNetV2 at 224,
    against ×1.14 / ×1.11 for ``PAD`` + ``ADD`` (LiteRT, 1 thread, 9 rounds). Both stay int8 after QAT."""
    if K in _MEAN_PAD:
        return _MEAN_PAD[K]

    class MeanPad(K.layers.Layer):
        def __init__(self, before: int, after: int, mean, **kwargs):
            super().__init__(**kwargs)
            self.before, self.after, self.mean = int(before), int(after), [float(m) for m in mean]

        def call(self, x):
            import tensorflow as tf
            pads = [[0, 0], [self.before, self.after], [self.before, self.after], [0, 0]]
            if len(set(self.mean)) == 1:
                return tf.pad(x, pads, constant_values=self.mean[0])
            # zero padding plus a constant that is the mean on the border and 0 inside
            h, w = x.shape[1] + self.before + self.after, x.shape[2] + self.before + self.after
            border = np.ones((1, h, w, 1), np.float32) * np.asarray(self.mean, np.float32)
            border[:, self.before:h - self.after, self.before:w - self.after, :] = 0.0
            return tf.pad(x, pads) + tf.constant(border)

        def compute_output_shape(self, shape):
            grow = self.before + self.after
            return (shape[0], None if shape[1] is None else shape[1] + grow,
                    None if shape[2] is None else shape[2] + grow, shape[3])

        def get_config(self):
            return {**super().get_config(), "before": self.before, "after": self.after, "mean": self.mean}

    _MEAN_PAD[K] = MeanPad
    return MeanPad


def build_stem(o: Ops, x, preprocessing: bool | str = False, size: int | None = None):
    """The spec's stem on the image ``x``: conv → BN → act (``stem_conv``, ``stem_bn``, ``stem_act``), then the 3×3
    stride-2 max pool ``stem_pool`` when ``stem.pool``. With ``stem.depthwise`` the conv is a depthwise k×k conv of
    depth multiplier ``filters / channels`` (E-DNAS's 11×11 stem).

    ``preprocessing`` is what ``x`` is (``build``'s ``include_preprocessing``): ``True`` raw pixels, normalised here
    by the ``preprocess`` layer; ``False`` normalised pixels; ``"fold"`` raw pixels with the normalisation in the
    stem's weights (`export.fold`). The conv's border sees what ``input.border`` says, at input ``size``:

    - ``"mean"``: normalised zeros — the conv's own zero padding, except in the folded build, where the raw image is
      padded with the mean (``stem_border_pad``, a :func:`mean_pad_layer`) and the conv is ``valid``;
    - ``"black"``: raw 0 pixels — the raw image is zero-padded before the ``preprocess`` layer (``stem_border_pad``),
      normalised input is padded with ``−mean / std``; the folded build is the plain conv with its zero padding,
      exact with no op added."""
    s, inp = o.spec.stem, o.spec.input
    from export.fold import stem_padding
    before, after = stem_padding(o.spec, size) if size is not None else (0, 0)
    black, pads = inp.border == "black", bool(before or after)
    if black and size is None:
        raise SpecError("input.border", "a black border needs the input size (build_stem(o, x, preprocessing, size))")
    padding = "valid"
    if pads and black and preprocessing is True:  # raw black border, then normalised with the image
        x = build_preprocess(o, o.L.ZeroPadding2D(((before, after), (before, after)), name="stem_border_pad")(x))
    elif pads and black and preprocessing is False:  # normalised input: black is −mean / std
        x = mean_pad_layer(o.K)(before, after, [-m / d for m, d in zip(inp.mean, inp.std)], name="stem_border_pad")(x)
    elif pads and not black and preprocessing == "fold":  # raw input: a normalised zero is the mean
        x = mean_pad_layer(o.K)(before, after, inp.mean, name="stem_border_pad")(x)
    else:  # the conv's own zero padding is the border: normalised zeros, or raw black in the folded build
        x = build_preprocess(o, x) if preprocessing is True else x
        x, padding = o.pad(x, s.kernel, s.stride, "stem_conv")
    if s.depthwise:
        x = o.L.DepthwiseConv2D(s.kernel, strides=s.stride, padding=padding, use_bias=False,
                                depth_multiplier=s.filters // o.spec.input.channels, name="stem_conv")(x)
    else:
        x = o.L.Conv2D(s.filters, s.kernel, strides=s.stride, padding=padding, use_bias=False, name="stem_conv")(x)
    x = o.act(o.bn(x, "stem_bn"), s.act, "stem_act")
    if s.pool:
        x, padding = o.pad(x, 3, 2, "stem_pool")
        x = o.L.MaxPooling2D(3, 2, padding=padding, name="stem_pool")(x)
    return x


def build_block(o: Ops, x, site: Site):
    """The block of ``site`` (a :class:`models.walk.Site`) on ``x``, its layers named ``{site.name}_*``."""
    if isinstance(site.block, MBConvSpec):
        return _mbconv(o, x, site)
    if isinstance(site.block, ConvSpec):
        return _conv(o, x, site)
    return _shuffle(o, x, site)


def build_head(o: Ops, x, *, include_top: bool = True, classes: int | None = None, pooling: str | None = None,
               classifier_activation: str | None = None):
    """The spec's head on the last block's output ``x``: the 1×1 ``head`` conv (when ``head.filters``), then with
    ``include_top`` ``pool`` → ``dropout`` (when ``head.dropout`` > 0) → ``classifier``, else ``pooling``
    (``None``, ``"avg"`` or ``"max"``; arguments as in :func:`build`)."""
    head, L = o.spec.head, o.L
    if head.filters is not None:
        x = o.conv_bn_act(x, head.filters, 1, 1, "head", head.act)
    if include_top:
        x = L.GlobalAveragePooling2D(name="pool")(x)
        if head.dropout > 0:
            x = L.Dropout(head.dropout, name="dropout")(x)
        num_classes = head.classes if classes is None else classes
        x = L.Dense(num_classes, use_bias=head.bias, activation=classifier_activation, name="classifier")(x)
    elif pooling == "avg":
        x = L.GlobalAveragePooling2D(name="pool")(x)
    elif pooling == "max":
        x = L.GlobalMaxPooling2D(name="pool")(x)
    return x


def build(spec: ModelSpec, keras_module=None, *, include_top: bool = True, input_size: int | None = None,
          input_shape: tuple | None = None, classes: int | None = None, pooling: str | None = None,
          classifier_activation: str | None = None, features: bool = False, weights: str | None = None,
          name: str | None = None, include_preprocessing: bool | str = True):
    """Builds ``spec`` as a Functional model of stock layers.

    Args:
        spec: the decoded architecture.
        keras_module: ``keras`` (Keras 3, default) or ``tf_keras`` (the twin for tfmot).
        include_top: with the head conv, pooling, dropout and classifier (like keras.applications).
        input_size: square input size; default ``spec.input.size``. Inputs are raw RGB in 0–255; the spec's
            mean/std are applied inside the model by the ``preprocess`` layer.
        input_shape: keras.applications-style alternative to ``input_size``: ``(size, size, channels)``.
        classes: classifier width; default ``spec.head.classes``.
        pooling: with ``include_top=False``: ``None`` (4D features), ``"avg"`` or ``"max"``.
        classifier_activation: ``None`` returns logits; ``"softmax"`` probabilities.
        features: return a multi-output backbone with the last feature maps at strides 8, 16 and 32 (detection);
            the head is not built.
        weights: path of a ``.npz`` weights file to load by layer name (see :mod:`models.weights`).
        name: model name; default ``spec.name``.
        include_preprocessing: False: no ``preprocess`` layer; the model takes images already normalised with the
            spec's ``input.mean``/``input.std`` (as keras.applications' ``include_preprocessing=False``).
            ``"fold"``: raw 0–255 pixels in, no ``preprocess`` layer; the stem pads with the mean and convolves
            ``valid`` (:func:`build_stem`), or, with ``input.border="black"``, is the plain conv; it equals the zoo
            model once its weights went through `export.fold.fold_weights`.

    Returns:
        A Functional ``Model`` of ``keras_module``.

    Raises:
        SpecError: the input size does not fit the network, or the arguments contradict each other.
    """
    if isinstance(keras_module, str):
        raise SpecError("keras_module", f"pass the module itself (keras or tf_keras), not the string {keras_module!r}")
    K = keras3 if keras_module is None else keras_module
    if not all(hasattr(K, a) for a in ("layers", "Model")) or not hasattr(K.layers, "Conv2D"):
        raise SpecError("keras_module", f"must be keras or tf_keras, got {getattr(K, '__name__', K)!r}")
    if name is not None and (not isinstance(name, str) or not name or "/" in name):
        raise SpecError("name", f"must be a non-empty string without '/' (a Keras model name), got {name!r}")
    for flag, value in (("include_top", include_top), ("features", features)):
        if not isinstance(value, (bool, np.bool_)):
            raise SpecError(flag, f"must be True or False, got {value!r}")
    if not (isinstance(include_preprocessing, (bool, np.bool_)) or include_preprocessing == "fold"):
        raise SpecError("include_preprocessing", f"must be True, False or 'fold', got {include_preprocessing!r}")
    if input_shape is not None:
        shape = tuple(input_shape)
        if all(hasattr(d, "__index__") and not isinstance(d, bool) for d in shape):
            shape = tuple(operator.index(d) for d in shape)  # numpy integers as Python ints
        if (len(shape) != 3 or not all(isinstance(d, int) for d in shape) or shape[0] != shape[1]
                or shape[2] != spec.input.channels
                or input_size not in (None, shape[0])):
            raise SpecError("input_shape", f"must be (size, size, {spec.input.channels}) and agree with input_size, "
                                           f"got {input_shape!r}")
        input_size = shape[0]
    w = walk(spec, input_size)
    if pooling not in (None, "avg", "max"):
        raise SpecError("pooling", f"must be None, 'avg' or 'max', got {pooling!r}")
    if classes is not None:
        try:
            if isinstance(classes, bool) or not 1 <= operator.index(classes) <= MAX_CLASSES:
                raise TypeError
        except TypeError:
            raise SpecError("classes", f"must be an integer from 1 to {MAX_CLASSES}, got {classes!r}") from None
        classes = operator.index(classes)
    if classifier_activation is not None:
        try:
            K.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise SpecError("classifier_activation", f"must be None (logits), a Keras activation name such as "
                            f"'softmax' or a callable; got {classifier_activation!r}") from None
    num_classes = spec.head.classes if classes is None else classes
    o = Ops(K, spec)

    inputs = K.layers.Input((w.input_size, w.input_size, spec.input.channels), name="image")
    if include_preprocessing not in (True, False, "fold"):
        raise SpecError("include_preprocessing", f"must be True, False or 'fold', got {include_preprocessing!r}")
    x = build_stem(o, inputs, include_preprocessing, w.input_size)
    outputs = {}
    for site in w.blocks:
        x = outputs[site.name] = build_block(o, x, site)
    if features:
        model = K.Model(inputs, [outputs[s.name] for s in w.endpoints()], name=name or f"{spec.name}_features")
    else:
        x = build_head(o, x, include_top=include_top, classes=num_classes, pooling=pooling,
                       classifier_activation=classifier_activation)
        model = K.Model(inputs, x, name=name or spec.name)
    if weights is not None:
        arrays = read_npz(weights)
        kernel = arrays.get("classifier/kernel")
        if include_top and not features and kernel is not None and kernel.shape[-1] != num_classes:
            raise SpecError("classes", f"the weights have {kernel.shape[-1]} classes; to use {num_classes} build "
                                       "with include_top=False and add your own classifier")
        assign(model, arrays, source=weights, strict=include_top and not features)
    return model
