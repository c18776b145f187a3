"""The SPOS weight-sharing supernet (see :mod:`search.spos` for the space and the architecture encoding).

``SposSupernet(space)(images, arch, mode=...)`` runs the path ``arch`` (int tensor ``(n_blocks, 3)``):

- ``mode="train"``: batch statistics, moving statistics updated with the space's BN momentum;
- ``mode="eval"``: moving statistics;
- ``mode="recal"``: batch statistics, and every BN on the path replaces its moving statistics by the running mean of
  the batch statistics seen since :meth:`SposSupernet.reset_recal` (exact averages, the paper's recalibration).

Each block picks its branch with ``tf.switch_case`` (only that branch executes) and slices its weights to the
sampled width; with ``space.bits`` every conv of the block runs on DoReFa-quantized weights and PACT-quantized inputs.
Layers are Keras 3 layers registered serializable (DESIGN.md §2); the derived model never contains them.

The supernet is a :class:`search.protocol.Supernet`: :meth:`SposSupernet.derive` (the path's zoo spec, equal to
:func:`search.spos.arch_spec`), :meth:`SposSupernet.extract` (its weights sliced to the path's widths) and
:meth:`SposSupernet.derived_model`; each :class:`ChoiceBlock` derives and extracts its own block.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models.spec import ModelSpec, Provenance, ShuffleSpec
from search import PACKAGE
from search import spos as sp
from search.protocol import block_specs, build_derived

MODES = ("train", "eval", "recal")


def _ste(x, q):
    """Forward ``q``, gradient of ``x`` (straight-through)."""
    return tf.stop_gradient(q) + (x - tf.stop_gradient(x))  # exactly q forward (x + (q − x) is not, in floats)


def quantize_weights(w, bits):
    """DoReFa weight quantization with ``bits`` (int scalar tensor): 1 bit → sign(w)·E|w|; k bits →
    ``2·round_k(tanh(w) / (2·max|tanh w|) + ½) − 1`` (levels in [−1, 1]); straight-through gradients; 32 bits:
    float, ``w`` itself."""
    bits = tf.cast(bits, tf.float32)

    def binary():
        sign = tf.where(w >= 0.0, 1.0, -1.0)
        return _ste(w, sign * tf.reduce_mean(tf.abs(w)))

    def multi():
        n = tf.pow(2.0, bits) - 1.0
        t = tf.tanh(w)
        t = t / (2.0 * tf.reduce_max(tf.abs(t)) + 1e-12) + 0.5
        return 2.0 * _ste(t, tf.round(t * n) / n) - 1.0
    return tf.cond(bits >= 32.0, lambda: tf.identity(w), lambda: tf.cond(bits <= 1.0, binary, multi))


def pact(x, alpha, bits, signed: bool):
    """PACT activation quantization: clip to ``[0, α]`` (``[−α, α]`` when ``signed``) with learnable α, then
    ``2^bits − 1`` uniform steps; rounding is straight-through, α gets PACT's gradient (1 where x ≥ α). 32 bits:
    float, ``x`` itself (no clip)."""
    return tf.cond(tf.cast(bits, tf.float32) >= 32.0, lambda: tf.identity(x),
                   lambda: _pact(x, alpha, bits, signed))


def _pact(x, alpha, bits, signed: bool):
    n = tf.pow(2.0, tf.cast(bits, tf.float32)) - 1.0
    if signed:
        y = tf.maximum(tf.minimum(x, alpha), -alpha)
        step = 2.0 * alpha / n
        return _ste(y, tf.round((y + alpha) / step) * step - alpha)
    y = tf.minimum(tf.nn.relu(x), alpha)
    return _ste(y, tf.round(y * n / alpha) * alpha / n)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SlicedConvBN(keras.layers.Layer):
    """k×k conv (``kind="conv"``) or depthwise conv (``"dw"``) + BatchNorm (+ ReLU), weights at the largest width,
    sliced per call: input channels follow the input, output channels ``cout`` (dynamic) or all.

    ``conv_name``/``bn_name`` are the layer names of the same op in the builder's derived model.
    """

    def __init__(self, kind, kernel, cin, cout, stride, relu, conv_name, bn_name, eps=1e-5, momentum=0.9,
                 quantized=False, signed_input=False, **kw):
        super().__init__(**kw)
        if kind not in ("conv", "dw"):
            raise ValueError(f"kind must be 'conv' or 'dw', got {kind!r}")
        self.kind, self.kernel_size, self.cin, self.cout = kind, int(kernel), int(cin), int(cout)
        self.stride, self.relu, self.eps, self.momentum = int(stride), bool(relu), float(eps), float(momentum)
        self.conv_name, self.bn_name = conv_name, bn_name
        self.quantized, self.signed_input = bool(quantized), bool(signed_input)
        k, width = self.kernel_size, self.cin if kind == "dw" else self.cout
        shape = (k, k, self.cin, 1) if kind == "dw" else (k, k, self.cin, self.cout)
        self.kernel = self.add_weight(shape=shape, initializer="he_normal" if kind == "conv" else "glorot_uniform",
                                      name="kernel")
        self.gamma = self.add_weight(shape=(width,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(width,), initializer="zeros", name="beta")
        # BN statistics are sync-on-read under tf.distribute: each replica updates its own copy inside its
        # tf.switch_case branch (a mirrored variable would need a merge_call there, which TF cannot do inside control
        # flow); reads in cross-replica context average them. Layer.add_weight has no `synchronization` argument.
        with keras.name_scope(self.name, caller=self):
            self.moving_mean, self.moving_variance = (
                keras.Variable(initializer=init, shape=(width,), dtype="float32", trainable=False, name=name,
                               aggregation="mean", synchronization="on_read")
                for init, name in (("zeros", "moving_mean"), ("ones", "moving_variance")))
        if self.quantized:
            clip = keras.initializers.Constant(3.0 if signed_input else 6.0)
            self.alpha = self.add_weight(shape=(), initializer=clip, name="alpha")
        self.built = True

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "kernel": self.kernel_size, "cin": self.cin,
                "cout": self.cout, "stride": self.stride, "relu": self.relu, "conv_name": self.conv_name,
                "bn_name": self.bn_name, "eps": self.eps, "momentum": self.momentum, "quantized": self.quantized,
                "signed_input": self.signed_input}

    def call(self, x, cout=None, mode="eval", bits=None, recal_count=None):
        if bits is not None:
            x = pact(x, self.alpha, bits[1], self.signed_input)
        k, s = self.kernel_size, self.stride
        padding = "SAME"  # odd k, stride 1: k // 2 on every side, no copy of the input (the builder's choice too)
        if k > 1 and s > 1:  # symmetric padding; TF's "SAME" would pad only the bottom/right at stride 2
            x = tf.pad(x, [[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]])
            padding = "VALID"
        # Slice only what is not statically full: a slice and its gradient each copy the kernel.
        full_in = x.shape[-1] == self.cin
        cin = self.cin if full_in else tf.shape(x)[-1]
        if self.kind == "dw":
            w = self.kernel if full_in else self.kernel[:, :, :cin, :]
            c = cin
        else:
            c = self.cout if cout is None else cout
            w = self.kernel if full_in and cout is None else self.kernel[:, :, :cin, :c]
        if bits is not None:
            w = quantize_weights(w, bits[0])
        if self.kind == "dw":
            y = tf.nn.depthwise_conv2d(x, w, [1, s, s, 1], padding)
        else:
            y = tf.nn.conv2d(x, w, s, padding)
        y = self._bn(y, c, mode, recal_count)
        return tf.nn.relu(y) if self.relu else y

    def _bn(self, y, c, mode, recal_count):
        full = isinstance(c, int) and c == self.gamma.shape[0]
        gamma, beta = (self.gamma, self.beta) if full else (self.gamma[:c], self.beta[:c])
        mm, mv = (self.moving_mean, self.moving_variance) if full else (self.moving_mean[:c], self.moving_variance[:c])
        if mode == "eval":
            return tf.nn.batch_normalization(y, mm, mv, beta, gamma, self.eps)
        # Batch statistics: one fused op forward and one backward. The unfused tf.nn.moments form runs several
        # elementwise passes over the activations, and its gradient is built from dynamic shapes here (the sampled
        # width is a tensor: BroadcastTo + RealDiv instead of a static Tile). The raw op keeps ε exactly (the Python
        # wrapper raises it to 1.001e-5); its variance output is Bessel-corrected by n / max(n − 1, 1), which is
        # undone below (the normalisation itself uses the biased variance).
        out, mean, var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=y, scale=gamma, offset=beta, mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
            epsilon=self.eps, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        if y.shape[:3].is_fully_defined():  # values per channel, static where the shape is (no shape ops per BN)
            n = float(np.prod(y.shape[:3]))
            unbias = max(n - 1.0, 1.0) / n
        else:
            n = tf.cast(tf.reduce_prod(tf.shape(y)[:3]), tf.float32)
            unbias = tf.maximum(n - 1.0, 1.0) / n
        mean, var = tf.stop_gradient(mean), tf.stop_gradient(var * unbias)  # biased
        if mode == "train":
            m = self.momentum
            new_mean = mm * m + mean * (1 - m)
            new_var = mv * m + var * (1 - m)
        else:  # recal: exact running mean of the batch statistics
            k = tf.cast(recal_count, tf.float32)
            new_mean = (mm * k + mean) / (k + 1)
            new_var = (mv * k + var) / (k + 1)
        if full:
            self.moving_mean.assign(new_mean)
            self.moving_variance.assign(new_var)
        else:
            self.moving_mean.assign(tf.concat([new_mean, self.moving_mean[c:]], 0))
            self.moving_variance.assign(tf.concat([new_var, self.moving_variance[c:]], 0))
        return out

    def arrays(self, cin: int, cout: int | None) -> dict[str, np.ndarray]:
        """This op's weights sliced to ``cin`` inputs and ``cout`` outputs, keyed by the builder's names."""
        k = self.kernel.numpy()
        if self.kind == "dw":
            k, c = k[:, :, :cin, :], cin
        else:
            c = self.cout if cout is None else cout
            k = k[:, :, :cin, :c]
        out = {f"{self.conv_name}/kernel": k}
        for v in ("gamma", "beta", "moving_mean", "moving_variance"):
            out[f"{self.bn_name}/{v}"] = getattr(self, v).numpy()[:c]
        return out


def split_even_odd(x):
    """Even and odd channels (ShuffleNetV2's channel split after the shuffle, as the builder's Reshape/Cropping2D):
    one reshape to channel pairs and one unstack, so forward and backward each make one pass (two strided slices
    took two passes each way plus an AddN of their gradients: ~2.5x slower fwd+bwd on this CPU)."""
    shape = [d if d is not None else tf.shape(x)[i] for i, d in enumerate(x.shape)]
    pairs = tf.reshape(x, [-1, *shape[1:3], shape[3] // 2, 2])
    even, odd = tf.unstack(pairs, axis=-1)
    return even, odd


def _branch_ops(choice: str, p: str, cin: int, mid: int, cout: int, stride: int) -> list[tuple]:
    """Main-branch ops as ``(kind, k, cin, cout, stride, relu, conv_name, bn_name, dynamic_out)`` — the builder's
    ``_shuffle_branch`` layer for layer (``dynamic_out``: output width is the sampled mid width)."""
    if choice == "x":
        ops, ch = [], cin
        for i, (s, width, dyn) in enumerate([(stride, mid, True), (1, mid, True), (1, cout, False)]):
            ops.append(("dw", 3, ch, ch, s, False, f"{p}_dw{i}", f"{p}_dw{i}_bn", False))
            ops.append(("conv", 1, ch, width, 1, True, f"{p}_pw{i}_conv", f"{p}_pw{i}_bn", dyn))
            ch = width
        return ops
    k = int(choice)
    return [("conv", 1, cin, mid, 1, True, f"{p}_pw0_conv", f"{p}_pw0_bn", True),
            ("dw", k, mid, mid, stride, False, f"{p}_dw", f"{p}_dw_bn", False),
            ("conv", 1, mid, cout, 1, True, f"{p}_pw1_conv", f"{p}_pw1_bn", False)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChoiceBlock(keras.layers.Layer):
    """One SPOS choice block: a ShuffleNetV2 unit per block choice (own weights each), mid width and bit widths
    chosen per call from the architecture row ``(choice, ratio index, bits index)``."""

    def __init__(self, space_json: dict, index: int, **kw):
        super().__init__(**kw)
        self.space_json, self.index = space_json, int(index)
        self.space = space = sp.SposSpace.from_json(space_json)
        self.site = space.blocks()[self.index]
        i, j, cin, cout, stride = self.site
        self.prefix, self.cin, self.cout, self.stride = f"s{i}_b{j}", cin, cout, stride
        self.mids = [space.mid_channels(cout, r) for r in space.channel_ratios]
        self.bits_table = [list(b) for b in space.bits]
        self.choices = list(space.choices)
        q = space.quantized
        mid_max = max(self.mids)
        branch_in, branch_out = (cin, cout - cin) if stride == 2 else (cin // 2, cout // 2)
        # Layers live in one flat list (Keras tracks it); ``main``/``proj`` hold indices into it per block choice.
        self.ops, main, proj, dynamic = [], [], [], []

        def make(o, c, signed):
            self.ops.append(SlicedConvBN(*o[:8], eps=space.bn_eps, momentum=space.bn_momentum, quantized=q,
                                         signed_input=signed, name=f"{o[6]}_c{c}"))
            return len(self.ops) - 1

        for c, choice in enumerate(self.choices):
            ops = _branch_ops(choice, self.prefix, branch_in, mid_max, branch_out, stride)
            # an op's input is signed (no ReLU before it) when the previous op was a depthwise conv
            main.append(tuple(make(o, c, n > 0 and not ops[n - 1][5]) for n, o in enumerate(ops)))
            dynamic.append(tuple(o[8] for o in ops))
            if stride == 2:
                k = 3 if choice == "x" else int(choice)
                pops = [("dw", k, cin, cin, 2, False, f"{self.prefix}_proj_dw", f"{self.prefix}_proj_dw_bn"),
                        ("conv", 1, cin, cin, 1, True, f"{self.prefix}_proj_pw_conv", f"{self.prefix}_proj_pw_bn")]
                proj.append(tuple(make(o, c, n > 0) for n, o in enumerate(pops)))
        self._main_ops, self._proj_ops, self._dyn_out = tuple(main), tuple(proj), tuple(dynamic)
        self._compiled = {}
        self.built = True

    def get_config(self):
        return {**super().get_config(), "space_json": self.space_json, "index": self.index}

    def run_choice(self, c, x, mid, bits, mode, recal_count=None):
        """Block choice ``c`` (a Python int) at mid width ``mid`` and ``bits`` (tensors; ``bits`` None: float)."""
        if self.stride == 2:
            passthrough, y = x, x
            for i in self._proj_ops[c]:
                passthrough = self.ops[i](passthrough, mode=mode, bits=bits, recal_count=recal_count)
        else:
            passthrough, y = split_even_odd(x)
        for i, dyn in zip(self._main_ops[c], self._dyn_out[c]):
            y = self.ops[i](y, cout=mid if dyn else None, mode=mode, bits=bits, recal_count=recal_count)
        return tf.concat([passthrough, y], -1)

    def call(self, x, row, mode="eval", recal_count=None):
        mid = tf.gather(tf.constant(self.mids, tf.int32), row[1])
        bits = tf.gather(tf.constant(self.bits_table, tf.int32), row[2]) if self.bits_table else None
        if tf.executing_eagerly():
            # Eager (the training and evaluation loops): Python picks the branch, which runs as its own compiled
            # function; the tape records only that branch, so unsampled variables get no gradient at all.
            c = int(row[0])
            fn = self._compiled.get((c, mode))
            if fn is None:
                fn = self._compiled[(c, mode)] = tf.function(
                    lambda x, mid, bits, n, c=c: self.run_choice(c, x, mid, bits, mode, n), reduce_retracing=True)
            return fn(x, mid, bits, recal_count)
        fns = [lambda c=c: self.run_choice(c, x, mid, bits, mode, recal_count) for c in range(len(self.choices))]
        return tf.switch_case(row[0], fns)

    def path_ops(self, row) -> list[tuple["SlicedConvBN", int, int | None]]:
        """``(op, cin, cout)`` of every op on the path ``row`` (for weight extraction)."""
        c, mid = int(row[0]), self.mids[int(row[1])]
        out = []
        if self.stride == 2:
            out += [(self.ops[i], self.cin, None) for i in self._proj_ops[c]]
        ch = self.cin if self.stride == 2 else self.cin // 2
        for i, dyn in zip(self._main_ops[c], self._dyn_out[c]):
            op = self.ops[i]
            out.append((op, ch, mid if dyn else None))
            ch = ch if op.kind == "dw" else (mid if dyn else op.cout)
        return out

    def derive_block(self, row) -> ShuffleSpec:
        """The zoo block spec of the choice row ``(choice, ratio index, bits index)``."""
        return sp.block_spec(self.space, self.site, row)

    def extract_block(self, row, spec: ShuffleSpec | None = None) -> dict[str, np.ndarray]:
        """The derived block's weights for ``row``, sliced to its widths and keyed by the builder's layer names."""
        if spec is not None and spec != self.derive_block(row):
            raise ValueError(f"{self.prefix}: spec block {spec} does not match the choice {tuple(int(v) for v in row)}")
        out = {}
        for op, cin, cout in self.path_ops(row):
            out.update(op.arrays(cin, cout))
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class SposSupernet(keras.Model):
    """Stem (3×3 conv) → choice blocks → 1×1 head conv → GAP → dropout → classifier (no bias), as paper Table 2."""

    def __init__(self, space_json: dict, **kw):
        super().__init__(**kw)
        self.space_json = space_json
        self.space = space = sp.SposSpace.from_json(space_json)
        bn = dict(eps=space.bn_eps, momentum=space.bn_momentum)
        self.stem = SlicedConvBN("conv", 3, 3, space.stem_filters, space.stem_stride, True, "stem_conv", "stem_bn",
                                 name="stem", **bn)
        self.blocks = [ChoiceBlock(space_json, b, name=f"block{b}") for b in range(space.n_blocks)]
        self.head = SlicedConvBN("conv", 1, space.stage_channels[-1], space.head_filters, 1, True, "head_conv",
                                 "head_bn", name="head", **bn)
        self.dropout = keras.layers.Dropout(space.dropout, name="dropout")
        self.classifier = keras.layers.Dense(space.classes, use_bias=False, name="classifier")
        self.recal_count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="recal_count",
                                           dtype="int32", aggregation="only_first_replica")
        self._mean = tf.constant(space.mean, tf.float32)
        self._std = tf.constant(space.std, tf.float32)

    def get_config(self):
        return {"space_json": self.space_json, "name": self.name}

    def call(self, images, arch, mode="eval"):
        arch = tf.convert_to_tensor(arch, tf.int32)
        return self._forward(images, mode, lambda b, x, n: self.blocks[b](x, arch[b], mode=mode, recal_count=n))

    def call_path(self, images, arch, mode="eval"):
        """The path ``arch`` fixed in Python (a NumPy array): the same ops as ``call`` minus the branch selection.
        Inside a ``tf.function`` this traces only that path (one trace per architecture) — e.g. to fine-tune one
        path, or to measure what the selection costs (``benchmarks/spos_cost.py``)."""
        a = sp.validate_arch(self.space, arch)

        def run(b, x, n):
            block, (c, r, q) = self.blocks[b], (int(v) for v in a[b])
            bits = tf.constant(block.bits_table[q], tf.int32) if block.bits_table else None
            return block.run_choice(c, x, tf.constant(block.mids[r], tf.int32), bits, mode, n)
        return self._forward(images, mode, run)

    def _forward(self, images, mode, run_block):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        n = tf.convert_to_tensor(self.recal_count) if mode == "recal" else None
        x = (tf.cast(images, tf.float32) - self._mean) / self._std
        x = self.stem(x, mode=mode, recal_count=n)
        for b in range(len(self.blocks)):
            x = run_block(b, x, n)
        x = self.head(x, mode=mode, recal_count=n)
        x = tf.reduce_mean(x, [1, 2])
        x = self.dropout(x, training=mode == "train")
        if mode == "recal":
            self.recal_count.assign_add(1)
        return self.classifier(x)

    def reset_recal(self) -> None:
        self.recal_count.assign(0)

    def weight_variables(self) -> list:
        return list(self.trainable_variables)

    def variable_choices(self) -> list[tuple[int, int] | None]:
        """For each of :meth:`weight_variables`: ``(block, choice)`` of the block choice that owns it, or None for
        the stem, head and classifier, which every path runs."""
        owner = {id(v): (b, c) for b, block in enumerate(self.blocks) for c in range(len(block.choices))
                 for op, _, _ in block.path_ops((c, 0, 0)) for v in op.trainable_variables}
        return [owner.get(id(v)) for v in self.weight_variables()]

    # --- search.protocol.Supernet ---------------------------------------------------------------------------------
    def derive(self, arch, *, name: str = "spos_derived", provenance: Provenance | None = None) -> ModelSpec:
        """The zoo spec of the path ``arch`` (family ``shufflenet``), composed from the blocks' ``derive_block``."""
        a = sp.validate_arch(self.space, arch)
        return sp.assemble(self.space, (b.derive_block(row) for b, row in zip(self.blocks, a)), name, provenance)

    def extract(self, arch, spec: ModelSpec | None = None) -> dict[str, np.ndarray]:
        """Weights of the path ``arch`` keyed by the builder's layer names (``models.weights.assign`` order)."""
        a = sp.validate_arch(self.space, arch)
        out = self.stem.arrays(3, None)
        for block, row, b in zip(self.blocks, a, block_specs(spec, len(self.blocks))):
            out.update(block.extract_block(row, b))
        out.update(self.head.arrays(self.space.stage_channels[-1], None))
        out["classifier/kernel"] = self.classifier.kernel.numpy()
        return out

    def derived_model(self, arch, keras_module=None, *, name: str = "spos_derived"):
        """The stock-layer model of the path ``arch`` with the supernet's (sliced) weights."""
        return build_derived(self, arch, keras_module, self.derive(arch, name=name))


def build_supernet(space: sp.SposSpace, seed: int | None = None) -> SposSupernet:
    """A built supernet (variables created) for ``space``."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = SposSupernet(space.to_json(), name="spos_supernet")
    size = space.input_size
    model(tf.zeros((1, size, size, 3)), sp.largest(space), mode="eval")
    return model
